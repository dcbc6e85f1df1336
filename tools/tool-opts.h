/*
 * tool-opts.h -- one table per tool describes every option once.
 *
 * tools/<tool>-opts.h holds the table (struct tool_doc tool_doc). From it
 * come getopt's option table and short-option string (tool_getopt), the
 * --help text (tool_help) and, at build time through tools/gen-doc.c, the
 * man page and the bash and zsh completions. Adding an option is one line
 * in the table and one case in the tool's switch; tests/integration/
 * cli-docs.sh fails when the outputs disagree with what getopt accepts.
 */
#ifndef TOOL_OPTS_H
#define TOOL_OPTS_H

#include <getopt.h>
#include <stdio.h>

/* What a completion offers for an option's argument. */
enum tool_complete {
	TC_NONE = 0, /* free text: nothing */
	TC_FILE,
	TC_DIR,
	TC_WORDS, /* the words in tool_opt.words */
};

struct tool_opt {
	/* A row with only .section set starts a group of options. */
	const char *section;
	const char *name; /* long name without "--" */
	int short_name;   /* a letter, or 0 */
	int val;          /* what getopt_long returns: the letter, or an OPT_ value */
	const char *arg;  /* the argument's name ("FILE"); NULL: takes none */
	const char *help; /* one line for --help */
	const char *more; /* more for the man page (sentences), or NULL */
	enum tool_complete complete;
	const char *words; /* TC_WORDS: space-separated choices */
};

struct tool_doc {
	const char *name;
	const char *synopsis;         /* after the name: "[MODE] [OPTIONS] [CLOSURE]" */
	const char *summary;          /* the man page's NAME line */
	const char *description;      /* paragraphs separated by blank lines */
	const char *shortopts_prefix; /* "+" to stop at the first operand, or "" */
	const struct tool_opt *opts;  /* ends with a row of all zeros */
	const char *help_footer;      /* after the options in --help */
	/* The man page's closing sections: name and body, ending with NULL. */
	const char *const *sections;
};

#define T_SECTION(title)                                                                           \
	{                                                                                          \
		.section = (title)                                                                 \
	}

/*
 * getopt_long's tables from @d, allocated once (aborts when out of memory;
 * the tool cannot do anything useful then).
 */
void tool_getopt(const struct tool_doc *d, struct option **longopts, char **shortopts);
/* The --help text. */
void tool_help(const struct tool_doc *d, FILE *f);

#endif
