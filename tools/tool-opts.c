/* tool-opts.c -- getopt tables and --help from a tool's option table. */
#include <stdlib.h>
#include <string.h>

#include "tool-opts.h"

/* Kept for the process's life (reachable, so no leak report). */
static struct option *lo;
static char *so;

void tool_getopt(const struct tool_doc *d, struct option **longopts, char **shortopts)
{
	size_t n = 0, k = 0, s = 0;

	for (const struct tool_opt *o = d->opts; o->section || o->name; o++)
		n++;
	lo = calloc(n + 1, sizeof(*lo));
	so = calloc(strlen(d->shortopts_prefix) + 2 * n + 1, 1);
	if (!lo || !so)
		abort();
	strcpy(so, d->shortopts_prefix);
	s = strlen(so);
	for (const struct tool_opt *o = d->opts; o->section || o->name; o++) {
		if (!o->name)
			continue;
		lo[k++] = (struct option){ o->name, o->arg ? required_argument : no_argument, NULL,
			                   o->val };
		if (o->short_name) {
			so[s++] = (char)o->short_name;
			if (o->arg)
				so[s++] = ':';
		}
	}
	*longopts = lo;
	*shortopts = so;
}

#define HELP_COL 26

void tool_help(const struct tool_doc *d, FILE *f)
{
	const char *p = d->description, *end;

	fprintf(f, "Usage: %s %s\n\n", d->name, d->synopsis);
	/* The description's first paragraph. */
	end = strstr(p, "\n\n");
	fprintf(f, "%.*s\n", (int)(end ? end - p : (long)strlen(p)), p);
	for (const struct tool_opt *o = d->opts; o->section || o->name; o++) {
		int w;

		if (o->section) {
			fprintf(f, "\n%s:\n", o->section);
			continue;
		}
		if (o->short_name)
			w = fprintf(f, "  -%c, --%s", o->short_name, o->name);
		else
			w = fprintf(f, "      --%s", o->name);
		if (o->arg)
			w += fprintf(f, " %s", o->arg);
		if (w >= HELP_COL - 1)
			fprintf(f, "\n%*s%s\n", HELP_COL, "", o->help);
		else
			fprintf(f, "%*s%s\n", HELP_COL - w, "", o->help);
	}
	if (d->help_footer)
		fprintf(f, "\n%s", d->help_footer);
}
