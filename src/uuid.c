#include "uuid.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "util.h"

int uuid_generate(char ret[UUID_STR_LEN])
{
    uint8_t b[16];
    int r = util_random_bytes(b, sizeof(b));
    if (r < 0)
        return r;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */

    char hex[33];
    util_hex_encode(b, sizeof(b), hex);
    memcpy(ret, hex, 8);
    ret[8] = '-';
    memcpy(ret + 9, hex + 8, 4);
    ret[13] = '-';
    memcpy(ret + 14, hex + 12, 4);
    ret[18] = '-';
    memcpy(ret + 19, hex + 16, 4);
    ret[23] = '-';
    memcpy(ret + 24, hex + 20, 12);
    ret[36] = '\0';
    return 0;
}

int uuid_normalize(const char *text, char ret[UUID_STR_LEN])
{
    char out[UUID_STR_LEN];
    size_t i;
    for (i = 0; i < UUID_STR_LEN - 1; i++) {
        char c = text[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return -EINVAL;
            out[i] = c;
            continue;
        }
        if (!isxdigit((unsigned char)c))
            return -EINVAL;
        out[i] = (char)tolower((unsigned char)c);
    }
    if (text[i] != '\0')
        return -EINVAL;
    out[i] = '\0';
    memcpy(ret, out, UUID_STR_LEN);
    return 0;
}

bool uuid_is_valid(const char *text)
{
    char dummy[UUID_STR_LEN];
    return uuid_normalize(text, dummy) == 0;
}
