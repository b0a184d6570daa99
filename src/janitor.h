/*
 * The janitor: one thread that ends what has outlived its purpose. Every
 * second it destroys instances past their expires_at (their records stay,
 * TERMINATED, for terminated_retention), running instances nobody has
 * watched for idle_timeout, and forgets terminated records past their
 * retention and Idempotency-Keys older than a day.
 */
#pragma once

#include "api.h"

typedef struct Janitor Janitor;

int janitor_start(Api *api, Janitor **ret_janitor);
/* Stops the thread (finishing the instance it is on). Accepts NULL. */
void janitor_stop(Janitor *janitor);
