/* Random (version 4) UUIDs in their canonical lowercase text form. */
#pragma once

#include <stdbool.h>

/* 36 characters plus NUL. */
#define UUID_STR_LEN 37

int uuid_generate(char ret[UUID_STR_LEN]);
/*
 * Accepts the 8-4-4-4-12 hex form in either case and writes it lowercased,
 * so one instance has exactly one key. -EINVAL for anything else.
 */
int uuid_normalize(const char *text, char ret[UUID_STR_LEN]);
bool uuid_is_valid(const char *text);
