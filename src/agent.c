#include "agent.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* Seconds between attempts to reach a port that is not there (yet). */
#define RETRY_MIN_S 1
#define RETRY_MAX_S 5
/* Bytes of a guest's error message quoted in the log. */
#define AGENT_ERROR_QUOTE_MAX 200

typedef struct Watch {
    struct Watch *next;
    uint64_t serial; /* what epoll carries: a watch may be freed while an event is pending */
    char uuid[UUID_STR_LEN];
    char *start_url; /* NULL for the built-in page */
    int64_t open_id; /* the id our open carries; 0 when there is no open */
    int fd;          /* -1 while not connected */
    char line[AGENT_LINE_MAX + 1];
    size_t len;
    time_t next_attempt;
    unsigned retry_s;
    bool done;
} Watch;

struct AgentHub {
    Virt *virt;
    AgentReadyFn on_ready;
    void *userdata;
    pthread_mutex_t lock; /* guards watches */
    Watch *watches;
    int epoll_fd;
    int wake_fd;
    pthread_t thread;
    atomic_bool quit;
    int64_t next_id;
    uint64_t next_serial;
};

static void watch_free(Watch *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    free(w->start_url);
    free(w);
}

static void disconnect(AgentHub *hub, Watch *w, time_t now)
{
    if (w->fd >= 0) {
        epoll_ctl(hub->epoll_fd, EPOLL_CTL_DEL, w->fd, NULL);
        close(w->fd);
        w->fd = -1;
    }
    w->len = 0;
    w->next_attempt = now + w->retry_s;
    w->retry_s = w->retry_s * 2 > RETRY_MAX_S ? RETRY_MAX_S : w->retry_s * 2;
}

/* One JSON line to the guest; the port is ours alone, so a short write means it is broken. */
static int send_json(int fd, cJSON *json)
{
    _cleanup_free_ char *text = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!text)
        return -ENOMEM;
    size_t len = strlen(text);
    text[len] = '\n';
    ssize_t n = send(fd, text, len + 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    text[len] = '\0';
    return n == (ssize_t)(len + 1) ? 0 : -EIO;
}

static int greet(Watch *w)
{
    cJSON *hello = cJSON_CreateObject();
    if (hello && !cJSON_AddStringToObject(hello, "type", "hello")) {
        cJSON_Delete(hello);
        hello = NULL;
    }
    int r = send_json(w->fd, hello);
    if (r < 0 || !w->start_url)
        return r;
    cJSON *open = cJSON_CreateObject();
    if (open && (!cJSON_AddStringToObject(open, "type", "open") ||
                 !cJSON_AddStringToObject(open, "url", w->start_url) ||
                 !cJSON_AddNumberToObject(open, "id", (double)w->open_id))) {
        cJSON_Delete(open);
        open = NULL;
    }
    return send_json(w->fd, open);
}

static void try_connect(AgentHub *hub, Watch *w, time_t now)
{
    _cleanup_free_ char *path = NULL;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (virt_domain_agent_socket(hub->virt, w->uuid, AGENT_PORT_NAME, &path) < 0 ||
        strlen(path) >= sizeof(addr.sun_path)) {
        disconnect(hub, w, now);
        return;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        if (fd >= 0)
            close(fd);
        disconnect(hub, w, now);
        return;
    }
    w->fd = fd;
    w->len = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = w->serial};
    if (epoll_ctl(hub->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 || greet(w) < 0) {
        disconnect(hub, w, now);
        return;
    }
    log_debug("instance %s: guest agent channel connected", w->uuid);
}

/* Whether a message's id is the one this watch waits for (null = the built-in page). */
static bool id_matches(const Watch *w, const cJSON *id)
{
    if (!w->start_url)
        return true;
    return cJSON_IsNumber(id) && id->valuedouble == (double)w->open_id;
}

/* Acts on one line from the guest; false when the guest broke the protocol. */
static bool handle_line(AgentHub *hub, Watch *w, const char *line, size_t len)
{
    cJSON *msg = cJSON_ParseWithLength(line, len);
    if (!cJSON_IsObject(msg)) {
        cJSON_Delete(msg);
        return false;
    }
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "type"));
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
    bool ready = false;
    if (type && strcmp(type, "ready") == 0)
        ready = id_matches(w, id);
    else if (type && strcmp(type, "status") == 0)
        ready = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(msg, "ready")) && id_matches(w, id);
    else if (type && strcmp(type, "error") == 0) {
        const char *message =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "message"));
        char quoted[AGENT_ERROR_QUOTE_MAX + 4];
        util_quote_untrusted(message ? message : "", AGENT_ERROR_QUOTE_MAX, quoted);
        /* The guest's id when it is a whole number an open could carry (2^53 at most), else -1. */
        double n = cJSON_IsNumber(id) ? id->valuedouble : -1;
        long long shown =
            n >= 1 && n <= 9007199254740992.0 && n == (double)(long long)n ? (long long)n : -1;
        log_warn("instance %s: guest agent reports an error for id %lld: \"%s\"", w->uuid, shown,
                 quoted);
    }
    cJSON_Delete(msg);

    if (ready && !w->done) {
        w->done = true;
        hub->on_ready(hub->userdata, w->uuid);
    }
    return true;
}

static void on_readable(AgentHub *hub, Watch *w, time_t now)
{
    for (;;) {
        ssize_t n = read(w->fd, w->line + w->len, AGENT_LINE_MAX + 1 - w->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            disconnect(hub, w, now);
            return;
        }
        w->len += (size_t)n;
        char *nl;
        while ((nl = memchr(w->line, '\n', w->len))) {
            size_t line_len = (size_t)(nl - w->line);
            if (!handle_line(hub, w, w->line, line_len)) {
                log_warn("instance %s: guest agent sent a malformed message; reconnecting",
                         w->uuid);
                disconnect(hub, w, now);
                return;
            }
            memmove(w->line, nl + 1, w->len - line_len - 1);
            w->len -= line_len + 1;
        }
        if (w->len > AGENT_LINE_MAX) {
            log_warn("instance %s: guest agent line over %d bytes; reconnecting", w->uuid,
                     AGENT_LINE_MAX);
            disconnect(hub, w, now);
            return;
        }
    }
}

/* Drops finished watches and connects those due; under the lock. */
static void tend(AgentHub *hub, time_t now)
{
    for (Watch **p = &hub->watches; *p;) {
        Watch *w = *p;
        if (w->done) {
            *p = w->next;
            if (w->fd >= 0)
                epoll_ctl(hub->epoll_fd, EPOLL_CTL_DEL, w->fd, NULL);
            watch_free(w);
            continue;
        }
        if (w->fd < 0 && now >= w->next_attempt)
            try_connect(hub, w, now);
        p = &w->next;
    }
}

static void *hub_loop(void *arg)
{
    AgentHub *hub = arg;
    while (!atomic_load(&hub->quit)) {
        struct epoll_event events[16];
        int n = epoll_wait(hub->epoll_fd, events, 16, 500);
        time_t now = time(NULL);
        pthread_mutex_lock(&hub->lock);
        for (int i = 0; i < n; i++) {
            if (events[i].data.u64 == 0) {
                uint64_t drained;
                if (read(hub->wake_fd, &drained, sizeof(drained)) < 0)
                    log_debug("agent: wake: %s", strerror(errno));
                continue;
            }
            for (Watch *w = hub->watches; w; w = w->next)
                if (w->serial == events[i].data.u64 && w->fd >= 0)
                    on_readable(hub, w, now);
        }
        tend(hub, now);
        pthread_mutex_unlock(&hub->lock);
    }
    return NULL;
}

static void wake(AgentHub *hub)
{
    uint64_t one = 1;
    if (write(hub->wake_fd, &one, sizeof(one)) < 0)
        log_debug("agent: wake: %s", strerror(errno));
}

int agent_hub_new(Virt *virt, AgentReadyFn on_ready, void *userdata, AgentHub **ret_hub)
{
    AgentHub *hub = calloc(1, sizeof(*hub));
    if (!hub)
        return -ENOMEM;
    hub->virt = virt;
    hub->on_ready = on_ready;
    hub->userdata = userdata;
    hub->next_id = 1;
    hub->next_serial = 1;
    pthread_mutex_init(&hub->lock, NULL);
    hub->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    hub->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (hub->epoll_fd < 0 || hub->wake_fd < 0 ||
        epoll_ctl(hub->epoll_fd, EPOLL_CTL_ADD, hub->wake_fd, &ev) < 0 ||
        pthread_create(&hub->thread, NULL, hub_loop, hub) != 0) {
        int r = -errno;
        if (hub->epoll_fd >= 0)
            close(hub->epoll_fd);
        if (hub->wake_fd >= 0)
            close(hub->wake_fd);
        pthread_mutex_destroy(&hub->lock);
        free(hub);
        return r < 0 ? r : -EAGAIN;
    }
    *ret_hub = hub;
    return 0;
}

void agent_hub_free(AgentHub *hub)
{
    if (!hub)
        return;
    atomic_store(&hub->quit, true);
    wake(hub);
    pthread_join(hub->thread, NULL);
    while (hub->watches) {
        Watch *w = hub->watches;
        hub->watches = w->next;
        watch_free(w);
    }
    close(hub->epoll_fd);
    close(hub->wake_fd);
    pthread_mutex_destroy(&hub->lock);
    free(hub);
}

/* Unlinks and frees the watch for uuid, if any; under the lock. */
static void drop(AgentHub *hub, const char *uuid)
{
    for (Watch **p = &hub->watches; *p; p = &(*p)->next) {
        if (strcmp((*p)->uuid, uuid) != 0)
            continue;
        Watch *w = *p;
        *p = w->next;
        if (w->fd >= 0)
            epoll_ctl(hub->epoll_fd, EPOLL_CTL_DEL, w->fd, NULL);
        watch_free(w);
        return;
    }
}

int agent_hub_watch(AgentHub *hub, const char *instance_uuid, const char *start_url)
{
    Watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    snprintf(w->uuid, sizeof(w->uuid), "%s", instance_uuid);
    w->fd = -1;
    w->retry_s = RETRY_MIN_S;
    if (start_url && start_url[0] && !(w->start_url = strdup(start_url))) {
        free(w);
        return -ENOMEM;
    }
    pthread_mutex_lock(&hub->lock);
    drop(hub, instance_uuid);
    if (w->start_url)
        w->open_id = hub->next_id++;
    w->serial = hub->next_serial++;
    w->next = hub->watches;
    hub->watches = w;
    pthread_mutex_unlock(&hub->lock);
    wake(hub);
    return 0;
}

void agent_hub_forget(AgentHub *hub, const char *instance_uuid)
{
    if (!hub)
        return;
    pthread_mutex_lock(&hub->lock);
    drop(hub, instance_uuid);
    pthread_mutex_unlock(&hub->lock);
}
