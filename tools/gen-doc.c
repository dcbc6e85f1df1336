/*
 * gen-doc.c -- the man page and shell completions of one tool, from its
 * option table (tool-opts.h). Built once per tool with TOOL_TABLE naming
 * the table's header; run at build time:
 *
 *   gen-doc-<tool> man|bash|zsh|list OUTPUT
 *
 * list writes the long option names one per line (for tests/integration/
 * cli-docs.sh). Output is a function of the table alone: reproducible.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include TOOL_TABLE

#ifndef IMG_VERSION
#define IMG_VERSION "0"
#endif
/* The man pages' date: when their text last changed materially. */
#define MAN_DATE "2026-12-03"

#define FOR_OPTS(o) for (const struct tool_opt *o = tool_doc.opts; o->section || o->name; o++)

/* Text for roff: escape backslashes, keep lines from starting with a control character. */
static void roff(FILE *f, const char *s, int dashes)
{
	int bol = 1;

	for (; *s; s++) {
		if (bol && (*s == '.' || *s == '\''))
			fputs("\\&", f);
		bol = *s == '\n';
		if (*s == '\\')
			fputs("\\e", f);
		else if (*s == '-' && dashes)
			fputs("\\-", f);
		else
			fputc(*s, f);
	}
}

/* A paragraph's text: newlines inside it are spaces, blank lines start a new one. */
static void roff_paragraphs(FILE *f, const char *s)
{
	const char *p = s;

	while (*p) {
		const char *end = strstr(p, "\n\n");
		size_t n = end ? (size_t)(end - p) : strlen(p);
		char *para = strndup(p, n);

		if (!para)
			abort();
		for (char *c = para; *c; c++)
			if (*c == '\n')
				*c = ' ';
		if (p != s)
			fputs(".PP\n", f);
		roff(f, para, 0);
		fputc('\n', f);
		free(para);
		p += n;
		while (*p == '\n')
			p++;
	}
}

static void upper(FILE *f, const char *s)
{
	for (; *s; s++)
		fputc(toupper((unsigned char)*s), f);
}

static void man(FILE *f)
{
	const char *const *sec;

	fputs(".TH ", f);
	upper(f, tool_doc.name);
	fprintf(f, " 1 %s \"libimg %s\" \"User Commands\"\n", MAN_DATE, IMG_VERSION);
	fprintf(f, ".SH NAME\n%s \\- ", tool_doc.name);
	roff(f, tool_doc.summary, 0);
	fprintf(f, "\n.SH SYNOPSIS\n.B %s\n", tool_doc.name);
	roff(f, tool_doc.synopsis, 1);
	fputs("\n.SH DESCRIPTION\n", f);
	roff_paragraphs(f, tool_doc.description);
	fputs(".SH OPTIONS\n", f);
	FOR_OPTS(o)
	{
		if (o->section) {
			fputs(".SS ", f);
			roff(f, o->section, 0);
			fputc('\n', f);
			continue;
		}
		fputs(".TP\n", f);
		if (o->short_name)
			fprintf(f, "\\fB\\-%c\\fR, ", o->short_name);
		fputs("\\fB\\-\\-", f);
		roff(f, o->name, 1);
		fputs("\\fR", f);
		if (o->arg) {
			fputs(" \\fI", f);
			roff(f, o->arg, 1);
			fputs("\\fR", f);
		}
		fputc('\n', f);
		roff(f, o->help, 0);
		fputs(".", f);
		if (o->more) {
			fputc('\n', f);
			roff(f, o->more, 0);
		}
		fputc('\n', f);
	}
	for (sec = tool_doc.sections; sec && sec[0]; sec += 2) {
		fputs(".SH ", f);
		roff(f, sec[0], 0);
		fputc('\n', f);
		if (!strcmp(sec[0], "EXAMPLES")) {
			fputs(".nf\n", f);
			roff(f, sec[1], 1);
			fputs("\n.fi\n", f);
		} else {
			roff_paragraphs(f, sec[1]);
		}
	}
}

static void bash(FILE *f)
{
	const char *n = tool_doc.name;
	int first;

	fprintf(f, "# bash completion for %s (generated from its option table)\n", n);
	fprintf(f, "_%s()\n{\n", n);
	fputs("\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n", f);
	fputs("\tCOMPREPLY=()\n\tcase $prev in\n", f);
	for (int kind = TC_FILE; kind <= TC_WORDS; kind++) {
		if (kind == TC_WORDS) {
			FOR_OPTS(o)
			{
				if (o->name && o->arg && o->complete == TC_WORDS) {
					fprintf(f, "\t--%s", o->name);
					if (o->short_name)
						fprintf(f, "|-%c", o->short_name);
					fprintf(
					    f,
					    ")\n\t\tCOMPREPLY=($(compgen -W '%s' -- \"$cur\"))\n"
					    "\t\treturn ;;\n",
					    o->words);
				}
			}
			continue;
		}
		first = 1;
		FOR_OPTS(o)
		{
			if (!o->name || !o->arg || (int)o->complete != kind)
				continue;
			fprintf(f, "%s--%s", first ? "\t" : "|", o->name);
			if (o->short_name)
				fprintf(f, "|-%c", o->short_name);
			first = 0;
		}
		if (!first)
			fprintf(f,
			        ")\n\t\tcompopt -o filenames 2>/dev/null\n"
			        "\t\tCOMPREPLY=($(compgen -%c -- \"$cur\"))\n\t\treturn ;;\n",
			        kind == TC_FILE ? 'f' : 'd');
	}
	/* Every other option that takes an argument: free text. */
	first = 1;
	FOR_OPTS(o)
	{
		if (!o->name || !o->arg || o->complete != TC_NONE)
			continue;
		fprintf(f, "%s--%s", first ? "\t" : "|", o->name);
		if (o->short_name)
			fprintf(f, "|-%c", o->short_name);
		first = 0;
	}
	if (!first)
		fputs(")\n\t\treturn ;;\n", f);
	fputs("\tesac\n\tif [[ $cur == -* ]]; then\n\t\tCOMPREPLY=($(compgen -W '", f);
	first = 1;
	FOR_OPTS(o)
	{
		if (!o->name)
			continue;
		fprintf(f, "%s--%s", first ? "" : " ", o->name);
		if (o->short_name)
			fprintf(f, " -%c", o->short_name);
		first = 0;
	}
	fputs("' -- \"$cur\"))\n\t\treturn\n\tfi\n", f);
	fputs("\tcompopt -o filenames 2>/dev/null\n\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n}\n",
	      f);
	fprintf(f, "complete -F _%s %s\n", n, n);
}

/* Inside a single-quoted zsh word, inside _arguments' [description]. */
static void zsh_text(FILE *f, const char *s, int brackets)
{
	for (; *s; s++) {
		if (*s == '\'')
			fputs("'\\''", f);
		else if (brackets && (*s == '[' || *s == ']' || *s == '\\'))
			fprintf(f, "\\%c", *s);
		else if (!brackets && (*s == ':' || *s == '\\'))
			fprintf(f, "\\%c", *s);
		else
			fputc(*s, f);
	}
}

static void zsh(FILE *f)
{
	fprintf(f, "#compdef %s\n# zsh completion for %s (generated from its option table)\n",
	        tool_doc.name, tool_doc.name);
	fputs("_arguments -s -S \\\n", f);
	FOR_OPTS(o)
	{
		if (!o->name)
			continue;
		fputc('\t', f);
		if (o->short_name)
			fprintf(f, "'*'{-%c%s,--%s%s}'", o->short_name, o->arg ? "+" : "", o->name,
			        o->arg ? "=" : "");
		else
			fprintf(f, "'*--%s%s", o->name, o->arg ? "=" : "");
		fputc('[', f);
		zsh_text(f, o->help, 1);
		fputc(']', f);
		if (o->arg) {
			fputc(':', f);
			zsh_text(f, o->arg, 0);
			fputc(':', f);
			switch (o->complete) {
			case TC_FILE:
				fputs("_files", f);
				break;
			case TC_DIR:
				fputs("_files -/", f);
				break;
			case TC_WORDS:
				fputc('(', f);
				zsh_text(f, o->words, 0);
				fputc(')', f);
				break;
			case TC_NONE:
				fputs(" ", f);
				break;
			}
		}
		fputs("' \\\n", f);
	}
	fputs("\t'*:file:_files'\n", f);
}

int main(int argc, char **argv)
{
	FILE *f;

	if (argc != 3) {
		fprintf(stderr, "usage: %s man|bash|zsh|list OUTPUT\n", argv[0]);
		return 2;
	}
	f = fopen(argv[2], "w");
	if (!f) {
		perror(argv[2]);
		return 1;
	}
	if (!strcmp(argv[1], "man")) {
		man(f);
	} else if (!strcmp(argv[1], "bash")) {
		bash(f);
	} else if (!strcmp(argv[1], "zsh")) {
		zsh(f);
	} else if (!strcmp(argv[1], "list")) {
		FOR_OPTS(o)
		if (o->name)
			fprintf(f, "--%s\n", o->name);
	} else {
		fprintf(stderr, "%s: unknown output '%s'\n", argv[0], argv[1]);
		fclose(f);
		return 2;
	}
	if (ferror(f) | fclose(f)) {
		perror(argv[2]);
		return 1;
	}
	return 0;
}
