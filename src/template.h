/*
 * Domain templates: libvirt XML with placeholders, kept as data in
 * domains/<size>.xml. Substituted values are always XML-escaped; the
 * template's own markup is the only markup.
 *
 *   {{key}}              the value, escaped
 *   {{#key}} … {{/key}}  kept when key is set and non-empty, else dropped
 *   {{^key}} … {{/key}}  kept when key is unset or empty
 *
 * Sections do not nest. An unknown {{key}} or an unbalanced section is an
 * error, so a typo cannot silently produce a different machine.
 */
#pragma once

#include <stddef.h>

#define TEMPLATE_MAX (256 * 1024)

typedef struct {
    const char *key;
    const char *value; /* NULL same as unset */
} TemplateVar;

/*
 * 0, -EINVAL or -EFBIG (an output over TEMPLATE_MAX), both with *ret_error
 * (if not NULL, malloc'd), or -ENOMEM.
 */
int template_render(const char *tmpl, const TemplateVar *vars, size_t n_vars, char **ret_xml,
                    char **ret_error);

/* Escapes & < > " ' so text is safe in element content and in either kind of attribute quote. */
int xml_escape(const char *text, char **ret_escaped);

/* The sizes legbad offers, each backed by domains/<name>.xml. */
typedef struct DomainTemplates DomainTemplates;

extern const char *const template_size_names[]; /* "small", "medium", "large", NULL */

/* Loads every size's template; any missing or unreadable one is an error naming it. */
int domain_templates_load(const char *domains_dir, DomainTemplates **ret_templates,
                          char **ret_error);
void domain_templates_free(DomainTemplates *templates);
/* What a size offers, as its template declares it. */
typedef struct {
    unsigned vcpus;
    unsigned memory_mib;
    unsigned screen_width, screen_height;
} SizeInfo;

/* -ENOENT for an unknown size. */
int domain_templates_describe(const DomainTemplates *templates, const char *size,
                              SizeInfo *ret_info);

/* The template text for a size name, or NULL for an unknown size. */
const char *domain_templates_get(const DomainTemplates *templates, const char *size);
