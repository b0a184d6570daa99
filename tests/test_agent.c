/*
 * legbad's end of the guest agent channel, against a fake guest: the port
 * lookup (virt_domain_agent_socket) is wrapped at link time to hand out a
 * unix socket this test listens on, and the test plays the agent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"

#define UUID_A "6f1c2a4e-8b0d-4f3a-9c5e-1d2b3a4c5d6e"

static char socket_path[108];
static pthread_mutex_t ready_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned ready_calls;
static char ready_uuid[UUID_STR_LEN];

int __wrap_virt_domain_agent_socket(Virt *virt, const char *instance_uuid, const char *name,
                                    char **ret_path)
{
    if (strcmp(name, AGENT_PORT_NAME) != 0 || strcmp(instance_uuid, UUID_A) != 0)
        return -ENOENT;
    *ret_path = strdup(socket_path);
    return *ret_path ? 0 : -ENOMEM;
}

static void on_ready(void *userdata, const char *instance_uuid)
{
    pthread_mutex_lock(&ready_lock);
    ready_calls++;
    snprintf(ready_uuid, sizeof(ready_uuid), "%s", instance_uuid);
    pthread_mutex_unlock(&ready_lock);
}

static unsigned ready_count(void)
{
    pthread_mutex_lock(&ready_lock);
    unsigned n = ready_calls;
    pthread_mutex_unlock(&ready_lock);
    return n;
}

typedef struct {
    int listen_fd;
    AgentHub *hub;
} Fixture;

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    snprintf(socket_path, sizeof(socket_path), "/tmp/legba-test-agent-%d.sock", (int)getpid());
    unlink(socket_path);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path);
    f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->listen_fd >= 0);
    assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(listen(f->listen_fd, 4), 0);
    ready_calls = 0;
    assert_int_equal(agent_hub_new(NULL, on_ready, NULL, &f->hub), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    agent_hub_free(f->hub);
    close(f->listen_fd);
    unlink(socket_path);
    free(f);
    return 0;
}

/* The next connection legbad makes, within a few seconds. */
static int accept_guest(Fixture *f)
{
    struct pollfd p = {.fd = f->listen_fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 8000), 1);
    int fd = accept(f->listen_fd, NULL, NULL);
    assert_true(fd >= 0);
    return fd;
}

/* One line from legbad, parsed. */
static cJSON *read_message(int fd)
{
    char line[AGENT_LINE_MAX + 2];
    size_t len = 0;
    while (len < sizeof(line) - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
        ssize_t n = read(fd, line + len, 1);
        assert_int_equal(n, 1);
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    cJSON *json = cJSON_Parse(line);
    assert_non_null(json);
    return json;
}

static void send_line(int fd, const char *text)
{
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(write(fd, "\n", 1), 1);
}

static bool wait_ready_calls(unsigned want, int ms)
{
    for (int i = 0; i < ms / 20; i++) {
        if (ready_count() >= want)
            return true;
        usleep(20 * 1000);
    }
    return ready_count() >= want;
}

/* Whether legbad closed its end (read returns 0) within ms. */
static bool closed_by_peer(int fd, int ms)
{
    char buf[256];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, ms) != 1)
            return false;
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            return true;
    }
}

static void test_start_url_ready_with_matching_id(void **state)
{
    Fixture *f = *state;
    assert_int_equal(agent_hub_watch(f->hub, UUID_A, "https://example.org/x"), 0);
    int fd = accept_guest(f);

    cJSON *hello = read_message(fd);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(hello, "type")), "hello");
    cJSON_Delete(hello);
    cJSON *open = read_message(fd);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(open, "type")), "open");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(open, "url")),
                        "https://example.org/x");
    int id = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(open, "id"));
    assert_true(id > 0);
    cJSON_Delete(open);

    /* The image's own page, or another open's page, is not the one asked for. */
    send_line(fd,
              "{\"type\":\"ready\",\"id\":null,\"url\":\"file:///usr/share/legba/start.html\"}");
    char other[128];
    snprintf(other, sizeof(other), "{\"type\":\"ready\",\"id\":%d,\"url\":\"x\"}", id + 1);
    send_line(fd, other);
    send_line(fd, "{\"type\":\"status\",\"ready\":false,\"id\":null}");
    send_line(fd, "{\"type\":\"something-new\"}");
    assert_false(wait_ready_calls(1, 400));

    char mine[128];
    snprintf(mine, sizeof(mine), "{\"type\":\"ready\",\"id\":%d,\"url\":\"https://example.org/x\"}",
             id);
    send_line(fd, mine);
    assert_true(wait_ready_calls(1, 3000));
    assert_string_equal(ready_uuid, UUID_A);
    /* Once ready the watch ends: legbad lets go of the port. */
    assert_true(closed_by_peer(fd, 3000));
    assert_int_equal(ready_count(), 1);
    close(fd);
}

static void test_builtin_page_status(void **state)
{
    Fixture *f = *state;
    assert_int_equal(agent_hub_watch(f->hub, UUID_A, NULL), 0);
    int fd = accept_guest(f);
    cJSON *hello = read_message(fd);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(hello, "type")), "hello");
    cJSON_Delete(hello);
    /* After a restart of legbad the guest may long be ready: its status says so. */
    send_line(fd, "{\"type\":\"status\",\"ready\":true,\"id\":null}");
    assert_true(wait_ready_calls(1, 3000));
    close(fd);
}

static void test_hostile_guest_is_dropped_and_retried(void **state)
{
    Fixture *f = *state;
    assert_int_equal(agent_hub_watch(f->hub, UUID_A, NULL), 0);

    /* Not JSON: legbad hangs up, then comes back. */
    int fd = accept_guest(f);
    cJSON_Delete(read_message(fd));
    send_line(fd, "this is not json");
    assert_true(closed_by_peer(fd, 3000));
    close(fd);

    /* A line past the limit: the same. */
    fd = accept_guest(f);
    cJSON_Delete(read_message(fd));
    char *huge = malloc(AGENT_LINE_MAX + 64);
    memset(huge, 'x', AGENT_LINE_MAX + 63);
    huge[AGENT_LINE_MAX + 63] = '\0';
    assert_int_equal(write(fd, huge, AGENT_LINE_MAX + 63), AGENT_LINE_MAX + 63);
    free(huge);
    assert_true(closed_by_peer(fd, 3000));
    close(fd);
    assert_int_equal(ready_count(), 0);

    /* A well-behaved guest afterwards is still heard. */
    fd = accept_guest(f);
    cJSON_Delete(read_message(fd));
    send_line(fd, "{\"type\":\"ready\",\"id\":null,\"url\":\"file:///x\"}");
    assert_true(wait_ready_calls(1, 3000));
    close(fd);
}

static void test_forget_stops_watching(void **state)
{
    Fixture *f = *state;
    assert_int_equal(agent_hub_watch(f->hub, UUID_A, "https://example.org/"), 0);
    int fd = accept_guest(f);
    cJSON_Delete(read_message(fd));
    cJSON *open = read_message(fd);
    int id = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(open, "id"));
    cJSON_Delete(open);
    agent_hub_forget(f->hub, UUID_A);
    assert_true(closed_by_peer(fd, 3000));
    char mine[128];
    snprintf(mine, sizeof(mine), "{\"type\":\"ready\",\"id\":%d}", id);
    /* Written into a closed connection: nobody is told. */
    (void)!send(fd, mine, strlen(mine), MSG_NOSIGNAL);
    close(fd);
    assert_false(wait_ready_calls(1, 500));
    agent_hub_forget(f->hub, "00000000-0000-4000-8000-000000000000");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_url_ready_with_matching_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_builtin_page_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_guest_is_dropped_and_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forget_stops_watching, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
