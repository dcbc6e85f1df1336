/*
 * vm-pool.c -- what a struct img_vm owns: every string and array it
 * allocates is kept in its pool and freed by img_vm_free(). In its own file
 * so that every vm*.c may use it without calling back into vm.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "vm-private.h"

void *vm_keep(struct img_vm *vm, void *p)
{
	if (!p)
		return NULL;
	if (vm->npool == vm->cpool) {
		size_t n = vm->cpool ? vm->cpool * 2 : 64;
		void **np = realloc(vm->pool, n * sizeof(*np));

		if (!np) {
			free(p);
			return NULL;
		}
		vm->pool = np;
		vm->cpool = n;
	}
	vm->pool[vm->npool++] = p;
	return p;
}

char *vm_strdup(struct img_vm *vm, const char *s)
{
	return s ? vm_keep(vm, strdup(s)) : NULL;
}

char *vm_printf(struct img_vm *vm, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : vm_keep(vm, s);
}
