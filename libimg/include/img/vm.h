/*
 * vm.h -- VM description -> QEMU argv, firmware discovery, state, supervision.
 * Not written yet (see the vmlaunch issue).
 */
#ifndef IMG_VM_H
#define IMG_VM_H
#include <img/context.h>
#endif
