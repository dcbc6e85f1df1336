/* vmlaunch.c -- start QEMU on an image (../shared/CLI.md). Not written yet. */
#include <stdio.h>
#include <string.h>

#include "tool-util.h"

int main(int argc, char **argv)
{
	tool_name = "vmlaunch";
	if (argc > 1 && !strcmp(argv[1], "--version")) {
		printf("vmlaunch (libimg) %s\n", IMG_VERSION);
		return 0;
	}
	tool_err("not written yet");
	return 1;
}
