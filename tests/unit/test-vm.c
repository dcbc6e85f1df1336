/*
 * test-vm.c -- vmlaunch's library side: golden QEMU argv for each option of
 * the reference runner and docs/cli.md, firmware descriptor selection, boot-mode
 * detection, refusals of bad input, and the state directory.
 *
 * Golden files (fixtures/vm/golden/<case>.argv) hold one argument per line
 * with the test directory written as @T@. IMG_UPDATE_GOLDEN=1 rewrites them;
 * review the diff. QEMU itself accepting these command lines is shown by
 * tests/integration/vm-qemu-accepts.sh.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <img/nixdb.h>
#include <img/qcow2.h>
#include <img/vm.h>

#include "private.h"
#include "testutil.h"

static char *T; /* per-test directory */

static void sub(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", T, name);
}

static void write_str(const char *path, const char *s)
{
	t_write_file(path, s, strlen(s));
}

static void make_file(const char *name, size_t size)
{
	char p[4096];
	void *buf = calloc(1, size ? size : 1);

	sub(p, sizeof(p), name);
	t_write_file(p, buf, size);
	free(buf);
}

/* Copy the descriptor templates into @dir with @DIR@ -> T/fw. */
static void install_descriptors(const char *dir, const char *only)
{
	const char *names[] = { "10-bios.json",
		                "20-aarch64.json",
		                "25-i440fx-only.json",
		                "30-stateless.json",
		                "35-missing-files.json",
		                "38-broken.json",
		                "40-secure-enrolled.json",
		                "50-secure-setup-mode.json",
		                "60-plain.json",
		                "70-plain-other.json" };
	char fwdir[4096];

	sub(fwdir, sizeof(fwdir), "fw");
	mkdir(dir, 0755);
	for (size_t i = 0; i < IMG_ARRAY_SIZE(names); i++) {
		char src[4096], dst[4096], buf[8192], out[16384], *p, *o = out;
		FILE *f;
		size_t n;

		if (only && strcmp(only, names[i]))
			continue;
		snprintf(src, sizeof(src), "%s/fixtures/vm/firmware/%s", IMG_SOURCE_DIR, names[i]);
		f = fopen(src, "r");
		ck_assert_ptr_nonnull(f);
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		for (p = buf; *p;) {
			if (!strncmp(p, "@DIR@", 5)) {
				o += sprintf(o, "%s", fwdir);
				p += 5;
			} else {
				*o++ = *p++;
			}
		}
		*o = '\0';
		snprintf(dst, sizeof(dst), "%s/%s", dir, names[i]);
		write_str(dst, out);
	}
}

static void setup(void)
{
	char p[4096];

	T = t_tmpdir("vm");
	make_file("disk.raw", 1 << 20);
	make_file("store.img", 1 << 20);
	sub(p, sizeof(p), "fw");
	mkdir(p, 0755);
	make_file("fw/code.fd", 8192);
	make_file("fw/vars.fd", 4096);
	make_file("fw/code2.fd", 8192);
	make_file("fw/vars2.fd", 4096);
	make_file("fw/code-sb.fd", 8192);
	make_file("fw/vars-sb.qcow2", 4096);
	make_file("kernel", 512);
	make_file("initrd", 512);
	make_file("bios.bin", 65536);
	make_file("ca.pem", 100);
	sub(p, sizeof(p), "share");
	mkdir(p, 0755);
	sub(p, sizeof(p), "shared");
	mkdir(p, 0755);
	sub(p, sizeof(p), "fwd");
	install_descriptors(p, NULL);
}

static void teardown(void)
{
	t_rmrf(T);
	free(T);
	T = NULL;
}

/* Paths used by the options; static so the opts can point at them. */
static char P_IMAGE[4096], P_STATE[4096], P_FWD[4096], P_STORE[4096], P_KERNEL[4096],
    P_INITRD[4096], P_BIOS[4096], P_SHARE[1024], P_SHARED[4096], P_CA[4096];
static const char *fwdirs[1];

static struct img_vm_opts base(void)
{
	struct img_vm_opts o;

	memset(&o, 0, sizeof(o));
	sub(P_IMAGE, sizeof(P_IMAGE), "disk.raw");
	sub(P_STATE, sizeof(P_STATE), "state");
	sub(P_FWD, sizeof(P_FWD), "fwd");
	sub(P_STORE, sizeof(P_STORE), "store.img");
	sub(P_KERNEL, sizeof(P_KERNEL), "kernel");
	sub(P_INITRD, sizeof(P_INITRD), "initrd");
	sub(P_BIOS, sizeof(P_BIOS), "bios.bin");
	sub(P_SHARED, sizeof(P_SHARED), "shared");
	sub(P_CA, sizeof(P_CA), "ca.pem");
	snprintf(P_SHARE, sizeof(P_SHARE), "data:%s/share:/mnt/data", T);
	fwdirs[0] = P_FWD;
	o.image = P_IMAGE;
	o.state_dir = P_STATE;
	o.boot = IMG_VM_BOOT_EFI;
	o.accel = IMG_VM_ACCEL_TCG;
	o.firmware_dirs = fwdirs;
	o.nfirmware_dirs = 1;
	o.no_firmware_fallback = 1;
	o.console = IMG_VM_CONSOLE_FILE;
	o.qemu = "qemu-system-x86_64";
	return o;
}

/* The argv as lines, the test directory written as @T@. */
static char *render(const struct img_vm *vm)
{
	char *const *argv = img_vm_argv(vm);
	size_t len, tl = strlen(T);
	char *out;
	FILE *f = open_memstream(&out, &len);

	for (size_t i = 0; argv[i]; i++) {
		for (const char *p = argv[i]; *p;) {
			if (!strncmp(p, T, tl)) {
				fputs("@T@", f);
				p += tl;
			} else if (*p == '\n') { /* one argument per line */
				fputs("\\n", f);
				p++;
			} else {
				fputc(*p++, f);
			}
		}
		fputc('\n', f);
	}
	fclose(f);
	return out;
}

static void golden(const char *name, const struct img_vm_opts *o)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm *vm;
	char path[4096], *got, *want = NULL;
	FILE *f;

	ck_assert_ok(img_vm_new(ctx, o, &vm), ctx);
	got = render(vm);
	snprintf(path, sizeof(path), "%s/fixtures/vm/golden/%s.argv", IMG_SOURCE_DIR, name);
	if (getenv("IMG_UPDATE_GOLDEN")) {
		f = fopen(path, "w");
		ck_assert_ptr_nonnull(f);
		fputs(got, f);
		fclose(f);
	}
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "no golden file %s; got:\n%s", path, got);
	{
		size_t cap = 1 << 16, n;

		want = calloc(1, cap);
		n = fread(want, 1, cap - 1, f);
		want[n] = '\0';
	}
	fclose(f);
	ck_assert_msg(!strcmp(got, want), "%s: argv differs.\n--- want\n%s--- got\n%s", name, want,
	              got);
	free(got);
	free(want);
	img_vm_free(vm);
	img_ctx_free(ctx);
}

/* The argument after @opt (first occurrence), or NULL. */
static const char *arg_after(const struct img_vm *vm, const char *opt)
{
	char *const *a = img_vm_argv(vm);

	for (size_t i = 0; a[i] && a[i + 1]; i++)
		if (!strcmp(a[i], opt))
			return a[i + 1];
	return NULL;
}

static int has_arg(const struct img_vm *vm, const char *s)
{
	char *const *a = img_vm_argv(vm);

	for (size_t i = 0; a[i]; i++)
		if (!strcmp(a[i], s))
			return 1;
	return 0;
}

/* ---- golden argv, one per option ------------------------------------------------- */

START_TEST(argv_efi_default)
{
	struct img_vm_opts o = base();

	golden("efi-default", &o);
}
END_TEST

START_TEST(argv_name_memory_cores)
{
	struct img_vm_opts o = base();

	o.name = "web";
	o.memory_mib = 3072;
	o.cores = 4;
	golden("name-memory-cores", &o);
}
END_TEST

START_TEST(argv_bios)
{
	struct img_vm_opts o = base();

	o.boot = IMG_VM_BOOT_BIOS;
	golden("bios", &o);
	o.bios_file = P_BIOS;
	golden("bios-file", &o);
}
END_TEST

START_TEST(argv_direct)
{
	struct img_vm_opts o = base();

	o.boot = IMG_VM_BOOT_DIRECT;
	o.kernel = P_KERNEL;
	o.initrd = P_INITRD;
	o.append = "root=LABEL=nixos init=/init";
	o.kernel_params = "loglevel=7 debug";
	golden("direct", &o);
	/* With graphics the screen is the last (preferred) console. */
	o.graphics = 1;
	o.kernel_params = NULL;
	golden("direct-graphics", &o);
	/* --console: these, in this order, instead of the default */
	{
		const char *cons[] = { "tty0", "ttyS0,115200n8" };
		struct img_ctx *ctx = t_ctx();
		struct img_vm *vm;

		o.consoles = cons;
		o.nconsoles = 2;
		ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
		ck_assert_str_eq(arg_after(vm, "-append"),
		                 "root=LABEL=nixos init=/init console=tty0 console=ttyS0,115200n8");
		img_vm_free(vm);
		img_ctx_free(ctx);
	}
}
END_TEST

START_TEST(argv_secure_boot)
{
	struct img_vm_opts o = base();

	o.secure_boot = 1;
	golden("secure-boot", &o);
}
END_TEST

START_TEST(argv_tpm)
{
	struct img_vm_opts o = base();

	o.tpm = 1;
	golden("tpm", &o);
}
END_TEST

START_TEST(argv_disks)
{
	struct img_vm_opts o = base();
	uint64_t empty[2] = { 1 << 30, 512ull << 20 };

	o.store_image = P_STORE;
	o.empty_disks = empty;
	o.nempty_disks = 2;
	golden("disks-virtio", &o);
	o.disk_if = IMG_VM_DISK_SCSI;
	golden("disks-scsi", &o);
	o.disk_if = IMG_VM_DISK_IDE;
	golden("disks-ide", &o);
}
END_TEST

START_TEST(argv_network)
{
	struct img_vm_opts o = base();
	const char *fwd[] = { "2222:22", "udp:5353:53", "0.0.0.0:8080:80", "tcp:127.0.0.2:9000:9" };
	const char *gfwd[] = { "10.0.2.100:80:127.0.0.1:8000" };

	o.forwards = fwd;
	o.nforwards = 4;
	o.guest_forwards = gfwd;
	o.nguest_forwards = 1;
	o.restrict_network = 1;
	o.net_opts = "hostname=vm,dns=10.0.2.3";
	golden("network", &o);
}
END_TEST

START_TEST(argv_vlans)
{
	struct img_vm_opts o = base();
	unsigned vlans[] = { 1, 42 };

	o.vlans = vlans;
	o.nvlans = 2;
	o.vlan_index = 3;
	golden("vlans", &o);
}
END_TEST

START_TEST(argv_shares)
{
	struct img_vm_opts o = base();
	const char *shares[2];
	char second[4096];

	snprintf(second, sizeof(second), "ro:%s/share:/mnt/ro:none", T);
	shares[0] = P_SHARE;
	shares[1] = second;
	base();
	shares[0] = P_SHARE;
	o.shares = shares;
	o.nshares = 2;
	o.shared_dir = P_SHARED;
	o.host_certs = P_CA;
	golden("shares", &o);
}
END_TEST

START_TEST(argv_guest_agent_console_graphics)
{
	struct img_vm_opts o = base();

	o.guest_agent = 1;
	o.console = IMG_VM_CONSOLE_STDIO;
	o.graphics = 1;
	golden("agent-stdio-graphics", &o);
}
END_TEST

START_TEST(argv_qemu_opts_and_extra)
{
	struct img_vm_opts o = base();
	const char *qo[] = { "-device", "virtio-balloon", "-d", "guest_errors" };
	const char *extra[] = { "-S", "-device", "pci-bridge,chassis_nr=1" };

	o.qemu = "/opt/qemu/bin/qemu-system-x86_64";
	o.qemu_opts = qo;
	o.nqemu_opts = 4;
	o.extra_args = extra;
	o.nextra_args = 3;
	golden("qemu-opts-extra", &o);
}
END_TEST

START_TEST(argv_commas_doubled)
{
	struct img_vm_opts o = base();
	char img[4096], state[4096];

	sub(img, sizeof(img), "a,b.raw");
	make_file("a,b.raw", 1 << 20);
	sub(state, sizeof(state), "st,ate");
	o.image = img;
	o.store_image = img;
	o.state_dir = state;
	o.name = "x,y";
	golden("commas", &o);
}
END_TEST

START_TEST(argv_nix_env_paths)
{
	struct img_vm_opts o = base();
	char d[4096], e[4096], s[4096];

	sub(d, sizeof(d), "elsewhere/nixos.qcow2");
	sub(e, sizeof(e), "elsewhere/vars.fd");
	sub(s, sizeof(s), "elsewhere/tpm");
	o.disk_image = d;
	o.efi_vars = e;
	o.swtpm_dir = s;
	o.tpm = 1;
	golden("nix-env-paths", &o);
}
END_TEST

START_TEST(argv_cmdline_quoting)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm_opts o = base();
	const char *extra[] = { "-append", "it's a \"test\" $HOME", "" };
	struct img_vm *vm;
	char *s;

	o.extra_args = extra;
	o.nextra_args = 3;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_int_eq(img_vm_cmdline(vm, &s), 0);
	ck_assert_ptr_nonnull(strstr(s, " -append 'it'\\''s a \"test\" $HOME' ''\n"));
	ck_assert_ptr_nonnull(strstr(s, "qemu-system-x86_64 -name disk -nodefaults "));
	free(s);
	img_vm_free(vm);
	img_ctx_free(ctx);
}
END_TEST

/* ---- firmware --------------------------------------------------------------------- */

START_TEST(firmware_pick_and_filter)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm_firmware fw;
	char d[4096], want[4096];
	const char *dirs[1] = { d };

	sub(d, sizeof(d), "fwd");
	/* Not bios, not aarch64, not i440fx-only, not stateless, not missing
	 * files, not broken, not secure-boot: 60-plain. */
	ck_assert_ok(img_vm_firmware_find(ctx, dirs, 1, 0, &fw), ctx);
	ck_assert_str_eq(strrchr(fw.descriptor, '/'), "/60-plain.json");
	sub(want, sizeof(want), "fw/code.fd");
	ck_assert_str_eq(fw.code, want);
	ck_assert_str_eq(fw.code_format, "raw");
	ck_assert_int_eq(fw.requires_smm, 0);
	img_vm_firmware_release(&fw);
	/* Secure boot as the reference's OVMF with secureBoot: setup mode (no
	 * keys enrolled), so 50, not 40 although it sorts first. */
	ck_assert_ok(img_vm_firmware_find(ctx, dirs, 1, IMG_VM_SB_SETUP, &fw), ctx);
	ck_assert_str_eq(strrchr(fw.descriptor, '/'), "/50-secure-setup-mode.json");
	ck_assert_int_eq(fw.requires_smm, 1);
	ck_assert_int_eq(fw.enrolled_keys, 0);
	img_vm_firmware_release(&fw);
	/* Enrolled keys when asked: 40 (not 50), with its qcow2 vars. */
	ck_assert_ok(img_vm_firmware_find(ctx, dirs, 1, IMG_VM_SB_ENROLLED, &fw), ctx);
	ck_assert_str_eq(strrchr(fw.descriptor, '/'), "/40-secure-enrolled.json");
	ck_assert_str_eq(fw.vars_format, "qcow2");
	ck_assert_int_eq(fw.requires_smm, 1);
	ck_assert_int_eq(fw.enrolled_keys, 1);
	img_vm_firmware_release(&fw);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(firmware_override_and_mask)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm_firmware fw;
	char lo[4096], hi[4096], p[4096];
	const char *dirs[2] = { lo, hi };

	sub(lo, sizeof(lo), "fwd");
	sub(hi, sizeof(hi), "fw-user");
	mkdir(hi, 0755);
	/* An empty file of the same name masks 60-plain: 70 is next. */
	snprintf(p, sizeof(p), "%s/60-plain.json", hi);
	write_str(p, "");
	ck_assert_ok(img_vm_firmware_find(ctx, dirs, 2, 0, &fw), ctx);
	ck_assert_str_eq(strrchr(fw.descriptor, '/'), "/70-plain-other.json");
	ck_assert_str_eq(fw.code_format, "raw"); /* format defaults to raw */
	img_vm_firmware_release(&fw);
	/* The same name in the higher-priority directory replaces the lower one. */
	install_descriptors(hi, "70-plain-other.json");
	snprintf(p, sizeof(p), "%s/70-plain-other.json", hi);
	ck_assert_ok(img_vm_firmware_find(ctx, dirs, 2, 0, &fw), ctx);
	ck_assert_str_eq(fw.descriptor, p);
	img_vm_firmware_release(&fw);
	/* In the lower directory only: the higher one's mask does not apply upward. */
	dirs[0] = hi;
	dirs[1] = lo;
	ck_assert_ok(img_vm_firmware_find(ctx, dirs, 2, 0, &fw), ctx);
	ck_assert_str_eq(strrchr(fw.descriptor, '/'), "/60-plain.json");
	ck_assert_ptr_nonnull(strstr(fw.descriptor, "/fwd/"));
	img_vm_firmware_release(&fw);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(firmware_parse_rules)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm_firmware fw;
	const char *ok = "{\"interface-types\":[\"uefi\"],\"mapping\":{\"device\":\"flash\","
	                 "\"executable\":{\"filename\":\"/c\"},\"nvram-template\":{\"filename\":"
	                 "\"/v\",\"format\":\"raw\"}},\"targets\":[{\"architecture\":\"x86_64\","
	                 "\"machines\":[\"pc-q35-7.*\"]}],\"features\":[]}";
	const char *rel =
	    "{\"interface-types\":[\"uefi\"],\"mapping\":{\"device\":\"flash\","
	    "\"executable\":{\"filename\":\"c\"},\"nvram-template\":{\"filename\":"
	    "\"/v\"}},\"targets\":[{\"architecture\":\"x86_64\",\"machines\":[\"*\"]}]}";
	const char *pc = "{\"interface-types\":[\"uefi\"],\"mapping\":{\"device\":\"flash\"},"
	                 "\"targets\":[{\"architecture\":\"x86_64\",\"machines\":[\"pc\"]}]}";

	ck_assert_int_eq(img_vm_firmware_parse(ctx, "ok", ok, strlen(ok), 0, &fw), 0);
	ck_assert_str_eq(fw.code, "/c");
	img_vm_firmware_release(&fw);
	ck_assert_int_eq(img_vm_firmware_parse(ctx, "ok", ok, strlen(ok), IMG_VM_SB_SETUP, &fw), 1);
	/* Relative paths in a descriptor are refused with a message. */
	ck_assert_int_eq(img_vm_firmware_parse(ctx, "rel.json", rel, strlen(rel), 0, &fw), -EINVAL);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "rel.json"));
	ck_assert_int_eq(img_vm_firmware_parse(ctx, "pc", pc, strlen(pc), 0, &fw), 1);
	ck_assert_int_eq(img_vm_firmware_parse(ctx, "x", "[1,2", 4, 0, &fw), -EINVAL);
	ck_assert_int_eq(img_vm_firmware_parse(ctx, "x", "[1,2]", 5, 0, &fw), -EINVAL);
	img_ctx_free(ctx);
}
END_TEST

/* ---- refusals -------------------------------------------------------------------- */

static void expect_error(struct img_vm_opts *o, const char *needle)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm *vm = NULL;
	int r = img_vm_new(ctx, o, &vm);

	ck_assert_msg(r < 0, "img_vm_new succeeded; wanted an error with '%s'", needle);
	ck_assert_ptr_null(vm);
	ck_assert_msg(strstr(img_ctx_error(ctx), needle), "error '%s' lacks '%s'",
	              img_ctx_error(ctx), needle);
	img_ctx_free(ctx);
}

START_TEST(errors_bad_input)
{
	struct img_vm_opts o = base();
	char p[4096], empty[4096];
	const char *edirs[1] = { empty };
	uint8_t hdr[512] = { 'Q', 'F', 'I', 0xfb, 0, 0, 0, 3 };

	o.image = "/nonexistent/disk.qcow2";
	expect_error(&o, "/nonexistent/disk.qcow2");
	sub(p, sizeof(p), "notes.txt");
	write_str(p, "hello, I am not a disk\n");
	o = base();
	o.image = p;
	expect_error(&o, "not a disk image");
	/* qcow2 whose header names a backing file (offset 8). */
	sub(p, sizeof(p), "backed.qcow2");
	img_put_be64(hdr + 8, 0x200);
	img_put_be32(hdr + 16, 8);
	memcpy(hdr + 0x200 - 8, "x", 1);
	t_write_file(p, hdr, sizeof(hdr));
	o = base();
	o.image = p;
	expect_error(&o, "backing file");
	/* No usable firmware. */
	sub(empty, sizeof(empty), "no-firmware");
	mkdir(empty, 0755);
	o = base();
	o.firmware_dirs = edirs;
	expect_error(&o, "no usable UEFI firmware");
	/* --secure-boot --enrolled-keys with only setup-mode firmware. */
	install_descriptors(empty, "50-secure-setup-mode.json");
	o.secure_boot = 1;
	o.enrolled_keys = 1;
	expect_error(&o, "--secure-boot: no UEFI firmware with Secure Boot and enrolled keys");
	o.enrolled_keys = 0;
	o.secure_boot = 0;
	o.firmware_dirs = edirs;
	/* --bios-file on a UEFI boot: refused, saying why. */
	o.bios_file = P_BIOS;
	install_descriptors(empty, "60-plain.json");
	expect_error(&o, "--bios-file: this VM boots with UEFI");
	o.bios_file = NULL;
	/* --firmware without its variable store; --enrolled-keys alone. */
	o.firmware = P_BIOS;
	expect_error(&o, "--firmware needs --efi-vars-template");
	o.firmware = NULL;
	o.enrolled_keys = 1;
	expect_error(&o, "--enrolled-keys needs --secure-boot");
	o = base();
	o.boot = IMG_VM_BOOT_BIOS;
	o.secure_boot = 1;
	expect_error(&o, "needs UEFI");
	/* KVM asked for but unusable. */
	o = base();
	o.accel = IMG_VM_ACCEL_KVM;
	o.kvm_device = "/nonexistent/kvm";
	expect_error(&o, "--accel kvm: /nonexistent/kvm is not usable");
	o.kvm_device = "/dev/null";
	expect_error(&o, "is not usable");
	o = base();
	o.boot = IMG_VM_BOOT_DIRECT;
	expect_error(&o, "--boot direct needs --kernel");
	o.kernel = "/nonexistent/vmlinuz";
	expect_error(&o, "/nonexistent/vmlinuz");
}
END_TEST

START_TEST(errors_specs)
{
	struct img_vm_opts o;
	const char *bad_fwd[][1] = {
		{ "22" }, { "a:b" }, { "tcp:host:1:2" }, { "70000:22" }, { "sctp:1:2:3:4" }
	};
	const char *dup_fwd[] = { "2222:22", "127.0.0.2:2222:23" };
	const char *bad_g[] = { "192.168.1.1:80:127.0.0.1:80" };
	const char *bad_share[][1] = { { "tag:/tmp" },
		                       { "bad tag:/tmp:/mnt" },
		                       { "t:/tmp:/mnt:weird" },
		                       { "t:/nonexistent-dir:/mnt" },
		                       { "t:/tmp:relative" } };
	unsigned vl[] = { 0 }, vl2[] = { 5, 5 };
	uint64_t seven[7] = { 1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20 };
	char longdir[4096];

	for (size_t i = 0; i < IMG_ARRAY_SIZE(bad_fwd); i++) {
		o = base();
		o.forwards = bad_fwd[i];
		o.nforwards = 1;
		expect_error(&o, "--forward");
	}
	o = base();
	o.forwards = dup_fwd;
	o.nforwards = 2;
	expect_error(&o, "forwarded twice");
	o = base();
	o.relay_cmd = "nc; rm -rf /";
	expect_error(&o, "relay command");
	o = base();
	o.guest_forwards = bad_g;
	o.nguest_forwards = 1;
	expect_error(&o, "10.0.2.0/24");
	for (size_t i = 0; i < IMG_ARRAY_SIZE(bad_share); i++) {
		o = base();
		o.shares = bad_share[i];
		o.nshares = 1;
		expect_error(&o, "share");
	}
	o = base();
	o.vlans = vl;
	o.nvlans = 1;
	expect_error(&o, "--vlan 0");
	o.vlans = vl2;
	o.nvlans = 2;
	expect_error(&o, "twice");
	o = base();
	o.disk_if = IMG_VM_DISK_IDE;
	o.empty_disks = seven;
	o.nempty_disks = 6; /* root + 6 = 7 > 6 ports */
	expect_error(&o, "6 ports");
	o = base();
	memset(longdir, 0, sizeof(longdir));
	snprintf(longdir, sizeof(longdir), "%s/%0120d", T, 0);
	o.state_dir = longdir;
	expect_error(&o, "too long for a unix socket");
	o = base();
	o.name = "../escape";
	expect_error(&o, "--name");
	o = base();
	o.state_dir = NULL;
	o.ephemeral = 0;
	expect_error(&o, "no state directory");
}
END_TEST

/* ---- boot mode detection ----------------------------------------------------------- */

static int sfdisk_script(const char *path, const char *script)
{
	char sp[4096];
	char *argv[] = { "sh", "-c", NULL, NULL };
	char cmd[8192];

	sub(sp, sizeof(sp), "sfdisk.in");
	write_str(sp, script);
	snprintf(cmd, sizeof(cmd), "sfdisk -q '%s' < '%s' >/dev/null 2>&1", path, sp);
	argv[2] = cmd;
	return t_run(argv, NULL);
}

static enum img_vm_boot detect(const char *image, const char **source)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm_opts o = base();
	struct img_vm *vm;
	struct img_vm_info info;
	enum img_vm_boot b;
	static char src[64];

	o.image = image;
	o.boot = IMG_VM_BOOT_AUTO;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	img_vm_get_info(vm, &info);
	b = info.boot;
	snprintf(src, sizeof(src), "%s", info.boot_source);
	*source = src;
	img_vm_free(vm);
	img_ctx_free(ctx);
	return b;
}

START_TEST(boot_detect)
{
	char gpt[4096], mbr[4096], q[4096], man[4096], bare[4096];
	const char *src;
	struct img_vm_opts o;

	if (!t_have("sfdisk"))
		return;
	sub(gpt, sizeof(gpt), "gpt.raw");
	make_file("gpt.raw", 8 << 20);
	ck_assert_int_eq(sfdisk_script(gpt, "label: gpt\nsize=2MiB, type=U\ntype=L\n"), 0);
	ck_assert_int_eq(detect(gpt, &src), IMG_VM_BOOT_EFI);
	ck_assert_str_eq(src, "partition table");
	sub(mbr, sizeof(mbr), "mbr.raw");
	make_file("mbr.raw", 8 << 20);
	ck_assert_int_eq(sfdisk_script(mbr, "label: dos\ntype=83, bootable\n"), 0);
	ck_assert_int_eq(detect(mbr, &src), IMG_VM_BOOT_BIOS);
	/* The same GPT disk read through libimg's qcow2 reader. */
	if (t_have("qemu-img")) {
		char *argv[] = { "qemu-img", "convert", "-O", "qcow2", gpt, q, NULL };

		sub(q, sizeof(q), "gpt.qcow2");
		ck_assert_int_eq(t_run(argv, NULL), 0);
		ck_assert_int_eq(detect(q, &src), IMG_VM_BOOT_EFI);
	}
	/* A manifest beside the image wins over the table. */
	snprintf(man, sizeof(man), "%s.json", mbr);
	write_str(man,
	          "{\n  \"manifest_version\": 1,\n  \"format\": \"raw\",\n  \"mode\": \"efi\",\n"
	          "  \"boot\": \"efi\",\n  \"partition_table\": \"gpt\"\n}\n");
	ck_assert_int_eq(detect(mbr, &src), IMG_VM_BOOT_EFI);
	ck_assert_str_eq(src, "manifest");
	/* No table, no manifest: a clear request for --boot. */
	sub(bare, sizeof(bare), "bare.raw");
	make_file("bare.raw", 1 << 20);
	o = base();
	o.image = bare;
	o.boot = IMG_VM_BOOT_AUTO;
	expect_error(&o, "cannot tell how it boots");
	/* A bare file system whose manifest names a system: direct boot of it. */
	{
		struct img_ctx *ctx = t_ctx();
		struct img_vm *vm;
		char sys[4096], json[8192], want[8192];

		sub(sys, sizeof(sys), "sys");
		mkdir(sys, 0755);
		make_file("sys/kernel", 512);
		make_file("sys/initrd", 512);
		snprintf(man, sizeof(man), "%s.json", bare);
		snprintf(json, sizeof(json),
		         "{\"manifest_version\": 1, \"mode\": \"root\", \"boot\": \"none\", "
		         "\"partition_table\": \"none\", \"system\": \"%s\", \"kernel_params\": "
		         "\"root=LABEL=nixos quiet\"}\n",
		         sys);
		write_str(man, json);
		o.kernel_params = "debug";
		ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
		snprintf(want, sizeof(want), "%s/kernel", sys);
		ck_assert_str_eq(arg_after(vm, "-kernel"), want);
		snprintf(want, sizeof(want), "%s/initrd", sys);
		ck_assert_str_eq(arg_after(vm, "-initrd"), want);
		snprintf(want, sizeof(want),
		         "root=LABEL=nixos quiet init=%s/init console=ttyS0,115200 debug", sys);
		ck_assert_str_eq(arg_after(vm, "-append"), want);
		for (char *const *a = img_vm_argv(vm); *a; a++)
			ck_assert_ptr_null(strstr(*a, "if=pflash")); /* no firmware for direct */
		img_vm_free(vm);
		/* --boot direct without --kernel: the manifest's system too (it
		 * used to say the manifest named none, not having read it). */
		o.boot = IMG_VM_BOOT_DIRECT;
		ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
		snprintf(want, sizeof(want), "%s/kernel", sys);
		ck_assert_str_eq(arg_after(vm, "-kernel"), want);
		img_vm_free(vm);
		/* ... and without a manifest, it says so */
		ck_assert_int_eq(unlink(man), 0);
		expect_error(&o, "--boot direct needs --kernel: no manifest beside IMAGE");
		write_str(man, "{\"manifest_version\": 1, \"mode\": \"root\"}\n");
		expect_error(&o, "names no system");
		o.boot = IMG_VM_BOOT_AUTO;
		write_str(man, json);
		img_ctx_free(ctx);
		o.kernel_params = NULL;
	}
	/* A manifest of an unknown version is refused, not ignored. */
	snprintf(man, sizeof(man), "%s.json", bare);
	write_str(man, "{ \"manifest_version\": 99 }\n");
	expect_error(&o, "manifest_version");
}
END_TEST

/* ---- state -------------------------------------------------------------------------- */

static mode_t mode_of(const char *p)
{
	struct stat st;

	ck_assert_int_eq(stat(p, &st), 0);
	return st.st_mode & 07777;
}

START_TEST(state_prepare)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm_opts o = base();
	uint64_t empty[1] = { 64 << 20 };
	struct img_vm *vm;
	struct img_qcow2_info qi;
	char p[4096], img[4096];
	struct stat before, after;

	sub(img, sizeof(img), "disk.raw");
	ck_assert_int_eq(stat(img, &before), 0);
	o.empty_disks = empty;
	o.nempty_disks = 1;
	o.tpm = 1;
	o.host_certs = P_CA;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_ok(img_vm_prepare(ctx, vm), ctx);
	ck_assert_uint_eq(mode_of(P_STATE), 0700);
	/* The reference's shares: xchg made (private), the bundle copied so that
	 * every guest user may read it (9p model none shows host modes). */
	sub(p, sizeof(p), "state/xchg");
	ck_assert_uint_eq(mode_of(p), 0700);
	sub(p, sizeof(p), "state/certs");
	ck_assert_uint_eq(mode_of(p), 0755);
	sub(p, sizeof(p), "state/certs/ca-certificates.crt");
	ck_assert_uint_eq(mode_of(p), 0644);
	{
		struct stat cs;

		ck_assert_int_eq(stat(p, &cs), 0);
		ck_assert_int_eq(cs.st_size, 100);
	}
	sub(p, sizeof(p), "state/disk.qcow2");
	ck_assert_uint_eq(mode_of(p), 0600);
	ck_assert_ok(img_qcow2_probe(ctx, p, &qi), ctx);
	ck_assert_str_eq(qi.backing_file, img);
	ck_assert_str_eq(qi.backing_format, "raw");
	sub(p, sizeof(p), "state/efi-vars.fd");
	ck_assert_uint_eq(mode_of(p), 0600);
	sub(p, sizeof(p), "state/empty0.qcow2");
	ck_assert_uint_eq(mode_of(p), 0600);
	ck_assert_ok(img_qcow2_probe(ctx, p, &qi), ctx);
	ck_assert_uint_eq(qi.virtual_size, 64 << 20);
	sub(p, sizeof(p), "state/swtpm");
	ck_assert_uint_eq(mode_of(p), 0700);
	sub(p, sizeof(p), "state/console.log");
	ck_assert_uint_eq(mode_of(p), 0600);
	img_vm_free(vm);
	if (t_have("qemu-img")) {
		char *argv[] = { "qemu-img", "check", p, NULL };

		sub(p, sizeof(p), "state/disk.qcow2");
		ck_assert_int_eq(t_run(argv, NULL), 0);
		sub(p, sizeof(p), "state/empty0.qcow2");
		ck_assert_int_eq(t_run(argv, NULL), 0);
	}
	/* Again: everything kept; an xchg replaced by a symlink is refused. */
	sub(p, sizeof(p), "state/xchg");
	ck_assert_int_eq(rmdir(p), 0);
	ck_assert_int_eq(symlink(T, p), 0);
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_int_eq(img_vm_prepare(ctx, vm), -ENOTDIR);
	img_vm_free(vm);
	ck_assert_int_eq(unlink(p), 0);
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_ok(img_vm_prepare(ctx, vm), ctx);
	img_vm_free(vm);
	/* IMAGE replaced: refused, with the way out named. */
	make_file("disk.raw.new", 1 << 20);
	sub(p, sizeof(p), "disk.raw.new");
	ck_assert_int_eq(rename(p, img), 0);
	ck_assert_int_eq(stat(img, &before), 0);
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_int_eq(img_vm_prepare(ctx, vm), -ESTALE);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "--fresh"));
	img_vm_free(vm);
	o.fresh = 1;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_ok(img_vm_prepare(ctx, vm), ctx);
	img_vm_free(vm);
	/* IMAGE was only read. */
	ck_assert_int_eq(stat(img, &after), 0);
	ck_assert_int_eq(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
	ck_assert_int_eq(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
	ck_assert_int_eq(after.st_size, 1 << 20);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(state_ephemeral)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm_opts o = base();
	struct img_vm *vm;
	struct img_vm_info info;
	char tmp[4096], dir[4096];

	sub(tmp, sizeof(tmp), "tmp");
	o.state_dir = NULL;
	o.ephemeral = 1;
	o.tmpdir = tmp;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	img_vm_get_info(vm, &info);
	ck_assert_ptr_nonnull(strstr(info.state_dir, "/tmp/vmlaunch-disk.XXXXXX"));
	ck_assert_int_eq(access(tmp, F_OK), -1); /* nothing made yet */
	ck_assert_ok(img_vm_prepare(ctx, vm), ctx);
	img_vm_get_info(vm, &info);
	snprintf(dir, sizeof(dir), "%s", info.state_dir);
	ck_assert_ptr_null(strstr(dir, "XXXXXX"));
	ck_assert_uint_eq(mode_of(dir), 0700);
	/* The argv follows the real directory. */
	{
		int seen = 0;

		for (char *const *a = img_vm_argv(vm); *a; a++) {
			ck_assert_ptr_null(strstr(*a, "XXXXXX"));
			seen += strstr(*a, dir) != NULL;
		}
		ck_assert_int_ge(seen, 3); /* overlay, console log, QMP socket */
	}
	img_vm_free(vm);
	ck_assert_int_eq(access(dir, F_OK), -1);
	img_ctx_free(ctx);
}
END_TEST

/* One vmlaunch per state dir: a second prepare is refused naming the
 * holder's pid, a --fresh too (the overlay kept); after free the lock is gone. */
START_TEST(state_lock)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm_opts o = base();
	struct img_vm *a, *b;
	struct stat before, after;
	char want[64], p[4096];

	ck_assert_ok(img_vm_new(ctx, &o, &a), ctx);
	ck_assert_ok(img_vm_prepare(ctx, a), ctx);
	sub(p, sizeof(p), "state/disk.qcow2");
	ck_assert_int_eq(stat(p, &before), 0);
	snprintf(want, sizeof(want), "in use by vmlaunch (pid %ld)", (long)getpid());
	for (int fresh = 0; fresh < 2; fresh++) {
		o.fresh = fresh;
		ck_assert_ok(img_vm_new(ctx, &o, &b), ctx);
		ck_assert_int_eq(img_vm_prepare(ctx, b), -EBUSY);
		ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), want));
		img_vm_free(b);
	}
	ck_assert_int_eq(stat(p, &after), 0);
	ck_assert_int_eq(before.st_ino, after.st_ino);
	ck_assert_int_eq(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
	img_vm_free(a);
	ck_assert_ok(img_vm_new(ctx, &o, &b), ctx);
	ck_assert_ok(img_vm_prepare(ctx, b), ctx);
	img_vm_free(b);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(state_port_in_use)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm_opts o = base();
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	char spec[64];
	const char *fwd[1] = { spec };
	struct img_vm *vm;

	sa.sin_addr.s_addr = htonl(0x7f000001);
	ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(s, 1), 0);
	ck_assert_int_eq(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
	snprintf(spec, sizeof(spec), "%u:22", ntohs(sa.sin_port));
	o.forwards = fwd;
	o.nforwards = 1;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_int_eq(img_vm_prepare(ctx, vm), -EADDRINUSE);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "in use"));
	ck_assert_int_eq(access(P_STATE, F_OK), -1); /* refused before anything was made */
	img_vm_free(vm);
	close(s);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(accel_auto)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm_opts o = base();
	struct img_vm *vm;
	struct img_vm_info info;

	/* Not a KVM device: TCG, and the reason is said. */
	o.accel = IMG_VM_ACCEL_AUTO;
	o.kvm_device = "/dev/null";
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	img_vm_get_info(vm, &info);
	ck_assert_int_eq(info.accel, IMG_VM_ACCEL_TCG);
	ck_assert_ptr_nonnull(strstr(info.accel_reason, "/dev/null"));
	ck_assert_str_eq(arg_after(vm, "-accel"), "tcg");
	ck_assert_str_eq(arg_after(vm, "-cpu"), "max");
	img_vm_free(vm);
	/* The real /dev/kvm, if it answers: KVM with -cpu host. */
	o.kvm_device = NULL;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	img_vm_get_info(vm, &info);
	if (info.accel == IMG_VM_ACCEL_KVM) {
		ck_assert_str_eq(arg_after(vm, "-accel"), "kvm");
		ck_assert_str_eq(arg_after(vm, "-cpu"), "host");
	} else {
		ck_assert(!has_arg(vm, "host"));
	}
	img_vm_free(vm);
	img_ctx_free(ctx);
}
END_TEST

/* ---- --system TOPLEVEL ------------------------------------------------------------ */

#define SYS_NAME "0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web-25.05"
#define DEP_NAME "1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-dep-1.0"
static char P_ROOT[4096], P_SYS[4096], P_CI[4096];

/* T/root/nix/store/{SYS,DEP} and a closureInfo T/ci for them. */
static struct img_vm_opts system_base(void)
{
	struct img_vm_opts o = base();
	char p[4096];
	const char *dirs[] = { "root",
		               "root/nix",
		               "root/nix/store",
		               "root/nix/store/" SYS_NAME,
		               "root/nix/store/" DEP_NAME,
		               "ci" };

	for (size_t i = 0; i < IMG_ARRAY_SIZE(dirs); i++) {
		sub(p, sizeof(p), dirs[i]);
		mkdir(p, 0755);
	}
	make_file("root/nix/store/" SYS_NAME "/kernel", 512);
	make_file("root/nix/store/" SYS_NAME "/initrd", 512);
	make_file("root/nix/store/" SYS_NAME "/init", 16);
	sub(p, sizeof(p), "root/nix/store/" SYS_NAME "/kernel-params");
	write_str(p, "loglevel=4 net.ifnames=0\n\n"); /* $(cat) drops the newlines */
	sub(p, sizeof(p), "ci/store-paths");
	write_str(p, "/nix/store/" SYS_NAME "\n/nix/store/" DEP_NAME "\n");
	sub(p, sizeof(p), "ci/registration");
	write_str(
	    p,
	    "/nix/store/" SYS_NAME
	    "\nsha256:0000000000000000000000000000000000000000000000000000000000000000\n100\n\n2\n/"
	    "nix/store/" DEP_NAME "\n/nix/store/" SYS_NAME "\n/nix/store/" DEP_NAME
	    "\nsha256:1111111111111111111111111111111111111111111111111111111111111111\n50\n\n0\n");
	sub(P_ROOT, sizeof(P_ROOT), "root");
	sub(P_SYS, sizeof(P_SYS), "root/nix/store/" SYS_NAME);
	sub(P_CI, sizeof(P_CI), "ci");
	o.image = NULL;
	o.boot = IMG_VM_BOOT_AUTO;
	o.system = P_SYS;
	o.root = P_ROOT;
	o.closure_info = P_CI;
	return o;
}

/* What the reference's run script passes for this system (startVM):
 * -kernel/-initrd from the toplevel, -append "$(cat kernel-params)
 * init=... regInfo=... console=tty0 console=ttyS0,115200n8 $QEMU_KERNEL_PARAMS"
 * (consoles reversed without graphics), the root drive with cache=writeback,
 * werror=report, bootindex=1, serial=root, the host store as -virtfs
 * local,path=/nix/store,security_model=none,mount_tag=nix-store, xchg and
 * shared; the store image as the second drive, bootindex=2. */
START_TEST(argv_system)
{
	struct img_vm_opts o = system_base();
	struct img_ctx *ctx = t_ctx();
	struct img_vm *vm;
	const char *cons[] = { "ttyS1", "hvc0" };
	char link[4096];

	golden("system-default", &o);
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_str_eq(arg_after(vm, "-append"),
	                 "loglevel=4 net.ifnames=0 init=/nix/store/" SYS_NAME
	                 "/init regInfo=/tmp/xchg/.vmlaunch-registration console=tty0 "
	                 "console=ttyS0,115200n8 ");
	/* the name is the reference's system.name */
	ck_assert_ptr_nonnull(strstr(arg_after(vm, "-drive"), "/state/web.qcow2,"));
	img_vm_free(vm);
	/* a `result` link to the toplevel (relative, as nix-build makes it) */
	sub(link, sizeof(link), "result");
	ck_assert_int_eq(symlink("root/nix/store/" SYS_NAME, link), 0);
	o.system = link;
	golden("system-default", &o);
	o.store_image_auto = 1;
	golden("system-store-image", &o);
	o.store_image_auto = 0;
	o.no_root_disk = 1;
	o.graphics = 1;
	o.kernel_params = "systemd.log_level=debug";
	golden("system-no-root-graphics", &o);
	o.graphics = 0;
	o.consoles = cons;
	o.nconsoles = 2;
	o.kernel_params = NULL;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_ptr_nonnull(strstr(arg_after(vm, "-append"),
	                             "regInfo=/tmp/xchg/.vmlaunch-registration "
	                             "console=ttyS1 console=hvc0 "));
	img_vm_free(vm);
	img_ctx_free(ctx);
}
END_TEST

/* The reference's NIXPKGS_QEMU_KERNEL_<sanitized system.name>, asked of
 * the caller's lookup (the library reads no environment). */
struct env_answers {
	const char *name, *value; /* the one variable set */
	char asked[256];          /* the last name asked */
	int nasked;
};

static const char *env_answer(void *user, const char *name)
{
	struct env_answers *e = user;

	snprintf(e->asked, sizeof(e->asked), "%s", name);
	e->nasked++;
	return !strcmp(name, e->name) ? e->value : NULL;
}

#define SYS2_NAME "2ccccccccccccccccccccccccccccccc-nixos-system-my-host.lan-25.05"

START_TEST(system_kernel_override)
{
	struct img_vm_opts o = system_base();
	struct img_ctx *ctx = t_ctx();
	struct img_vm *vm;
	struct env_answers e = { .name = "NIXPKGS_QEMU_KERNEL_web" };
	char alt[4096], alt2[4096], p[4096], sys2[4096], ci2[4096], *d;

	make_file("alt-kernel", 512);
	make_file("alt-kernel-2", 512);
	sub(alt, sizeof(alt), "alt-kernel");
	sub(alt2, sizeof(alt2), "alt-kernel-2");
	o.env = env_answer;
	o.env_user = &e;
	/* unset, then empty (${VAR:-default}): TOPLEVEL/kernel, the golden argv */
	golden("system-default", &o);
	ck_assert_str_eq(e.asked, "NIXPKGS_QEMU_KERNEL_web");
	e.value = "";
	golden("system-default", &o);
	/* set: -kernel replaced, -initrd and -append still TOPLEVEL's */
	e.value = alt;
	golden("system-kernel-env", &o);
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_int_eq(img_vm_describe(vm, &d), 0);
	ck_assert_ptr_nonnull(strstr(d, "from: NIXPKGS_QEMU_KERNEL_web="));
	free(d);
	img_vm_free(vm);
	/* --kernel FILE is the same override and wins over the variable */
	o.kernel = alt2;
	e.nasked = 0;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_str_eq(arg_after(vm, "-kernel"), alt2);
	snprintf(p, sizeof(p), "%s/initrd", P_SYS);
	ck_assert_str_eq(arg_after(vm, "-initrd"), p);
	ck_assert_int_eq(e.nasked, 0);
	img_vm_free(vm);
	o.kernel = NULL;
	/* --name changes the VM's name, not system.name: same variable */
	o.name = "other";
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_str_eq(arg_after(vm, "-kernel"), alt);
	img_vm_free(vm);
	o.name = NULL;
	/* a missing override file: the variable named */
	sub(p, sizeof(p), "no-such-kernel");
	e.value = p;
	expect_error(&o, "NIXPKGS_QEMU_KERNEL_web=");

	/* system.name "my-host.lan": every non-alphanumeric character is '_' */
	sub(p, sizeof(p), "root/nix/store/" SYS2_NAME);
	mkdir(p, 0755);
	make_file("root/nix/store/" SYS2_NAME "/kernel", 512);
	make_file("root/nix/store/" SYS2_NAME "/initrd", 512);
	make_file("root/nix/store/" SYS2_NAME "/init", 16);
	sub(p, sizeof(p), "root/nix/store/" SYS2_NAME "/kernel-params");
	write_str(p, "loglevel=4\n");
	sub(ci2, sizeof(ci2), "ci2");
	mkdir(ci2, 0755);
	sub(p, sizeof(p), "ci2/store-paths");
	write_str(p, "/nix/store/" SYS2_NAME "\n");
	sub(p, sizeof(p), "ci2/registration");
	write_str(p,
	          "/nix/store/" SYS2_NAME "\nsha256:"
	          "0000000000000000000000000000000000000000000000000000000000000000\n100\n\n0\n");
	sub(sys2, sizeof(sys2), "root/nix/store/" SYS2_NAME);
	o.system = sys2;
	o.closure_info = ci2;
	e.name = "NIXPKGS_QEMU_KERNEL_my_host_lan";
	e.value = alt;
	golden("system-kernel-env-sanitized", &o);
	ck_assert_str_eq(e.asked, "NIXPKGS_QEMU_KERNEL_my_host_lan");
	/* the unsanitized spellings are not the reference's variable */
	e.name = "NIXPKGS_QEMU_KERNEL_my-host.lan";
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	{
		char want[4096];

		snprintf(want, sizeof(want), "%s/kernel", sys2);
		ck_assert_str_eq(arg_after(vm, "-kernel"), want);
	}
	img_vm_free(vm);
	img_ctx_free(ctx);
}
END_TEST

START_TEST(system_refusals)
{
	struct img_vm_opts o = system_base();
	char p[4096];

	o.image = P_IMAGE;
	expect_error(&o, "--system and IMAGE together");
	o = system_base();
	o.initrd = P_KERNEL;
	expect_error(&o, "--system takes initrd and parameters");
	o = system_base();
	o.append = "console=ttyS0";
	expect_error(&o, "--initrd/--append are for IMAGE");
	o = system_base();
	o.boot = IMG_VM_BOOT_EFI;
	expect_error(&o, "--system boots directly");
	o = system_base();
	o.system = P_KERNEL; /* not in the store */
	expect_error(&o, "not a store path under");
	o = system_base();
	sub(p, sizeof(p), "root/nix/store/" DEP_NAME);
	o.system = p; /* a store path, but no toplevel */
	expect_error(&o, "not a NixOS system toplevel");
	o = system_base();
	o.nix_db = P_KERNEL;
	o.closure_info = NULL; /* the database: not one */
	expect_error(&o, "Nix database");
	o = base();
	o.store_image_auto = 1;
	expect_error(&o, "--store-image auto builds the store image of --system");
}
END_TEST

START_TEST(system_prepare)
{
	struct img_ctx *ctx = t_ctx();
	struct img_vm_opts o = system_base();
	struct img_vm *vm;
	struct img_vm_info info;
	char p[4096];
	struct stat st;

	o.disk_size = 64 << 20;
	o.store_image_auto = 1;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_ok(img_vm_prepare(ctx, vm), ctx);
	img_vm_get_info(vm, &info);
	ck_assert_int_eq(info.root_disk_created, 1);
	ck_assert_int_eq(info.store_image_cached, 0);
	ck_assert_uint_eq(info.closure_paths, 2);
	img_vm_free(vm);
	sub(p, sizeof(p), "state/xchg/.vmlaunch-registration");
	ck_assert_uint_eq(mode_of(p), 0644);
	sub(p, sizeof(p), "state/web.qcow2");
	ck_assert_uint_eq(mode_of(p), 0600);
	if (t_have("qemu-img")) {
		char *argv[] = { "qemu-img", "check", p, NULL };

		ck_assert_int_eq(t_run(argv, NULL), 0);
	}
	/* again: the disk kept, the store image a cache hit */
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_ok(img_vm_prepare(ctx, vm), ctx);
	img_vm_get_info(vm, &info);
	ck_assert_int_eq(info.root_disk_created, 0);
	ck_assert_int_eq(info.store_image_cached, 1);
	ck_assert_ptr_nonnull(strstr(info.store_image, "/state/store-"));
	img_vm_free(vm);
	/* --fresh: the root disk vmlaunch made (its record beside it) goes and
	 * is made again; one it did not make is refused, not removed */
	o.fresh = 1;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_ok(img_vm_prepare(ctx, vm), ctx);
	img_vm_get_info(vm, &info);
	ck_assert_int_eq(info.root_disk_created, 1);
	img_vm_free(vm);
	sub(p, sizeof(p), "state/web.qcow2.base-id");
	ck_assert_int_eq(unlink(p), 0);
	sub(p, sizeof(p), "state/web.qcow2");
	ck_assert_int_eq(unlink(p), 0);
	make_file("state/web.qcow2", 1 << 20); /* a raw disk, no record: not ours */
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	ck_assert_int_lt(img_vm_prepare(ctx, vm), 0);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "refusing to remove"));
	img_vm_free(vm);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_eq(st.st_size, 1 << 20);
	img_ctx_free(ctx);
}
END_TEST

/* The reference's other host options. */
START_TEST(argv_more_options)
{
	struct img_vm_opts o = base();
	struct img_ctx *ctx = t_ctx();
	struct img_vm *vm;
	const char *drives[2];
	char d0[4096], d1[4096];

	o.tpm = 1;
	o.tpm_model = IMG_VM_TPM_CRB;
	golden("tpm-crb", &o);
	o = base();
	o.secure_boot = 1;
	o.enrolled_keys = 1;
	golden("secure-boot-enrolled", &o);
	o = base();
	o.firmware = P_BIOS;
	o.efi_vars_template = P_STORE;
	o.firmware_dirs = NULL; /* no search at all */
	golden("firmware-files", &o);
	o = base();
	snprintf(d0, sizeof(d0), "%s,cache=none,werror=report", P_STORE);
	snprintf(d1, sizeof(d1), "%s,format=qcow2,readonly=on", P_STORE);
	drives[0] = d0;
	drives[1] = d1;
	o.drives = drives;
	o.ndrives = 2;
	o.no_net = 1;
	o.no_virtio_keyboard = 1;
	golden("drives-no-net", &o);
	snprintf(d1, sizeof(d1), "%s,file=/etc/passwd", P_STORE);
	expect_error(&o, "'file=/etc/passwd' is not one of the drive options");
	snprintf(d1, sizeof(d1), "%s,cache=none,,x", P_STORE);
	expect_error(&o, "is not one of the drive options");
	/* USE_TMPDIR: xchg elsewhere */
	o = base();
	sub(d0, sizeof(d0), "tmp/xchg");
	o.xchg_dir = d0;
	ck_assert_ok(img_vm_new(ctx, &o, &vm), ctx);
	{
		char *got = render(vm);

		ck_assert_ptr_nonnull(
		    strstr(got, "path=@T@/tmp/xchg,security_model=none,mount_tag=xchg"));
		free(got);
	}
	/* made by the start (0700), as the reference's mkdir -p "$TMPDIR/xchg" */
	ck_assert_ok(img_vm_prepare(ctx, vm), ctx);
	ck_assert_uint_eq(mode_of(d0), 0700);
	img_vm_free(vm);
	img_ctx_free(ctx);
}
END_TEST

/* ---- the Nix database (nixdb.c) against the real nix-store ------------------------ */

START_TEST(nixdb_closure)
{
	static const char *const names[] = { "0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-top",
		                             "1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-mid",
		                             "2ccccccccccccccccccccccccccccccc-leaf",
		                             "3ddddddddddddddddddddddddddddddd-other" };
	struct img_ctx *ctx;
	struct img_nixdb_closure c;
	char reg[4096], p[4096], db[4096], store[4096], *q = reg;
	const char *h = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";
	/* top -> mid -> leaf, top -> top; other alone */
	const char *refs[4][3] = { { "0", "1", NULL }, { "2", NULL }, { NULL }, { NULL } };

	if (!t_have("nix-store")) {
		fprintf(stderr, "nixdb_closure: no nix-store (nix-bin): skipped\n");
		return;
	}
	for (int i = 0; i < 4; i++) {
		int n = 0;

		while (refs[i][n])
			n++;
		q += sprintf(q, "/nix/store/%s\n%s\n%d\n\n%d\n", names[i], h, 100 + i, n);
		for (int k = 0; k < n; k++)
			q += sprintf(q, "/nix/store/%s\n", names[refs[i][k][0] - '0']);
	}
	sub(p, sizeof(p), "reg");
	write_str(p, reg);
	snprintf(store, sizeof(store), "local?root=%s/nix", T);
	{
		char cmd[8192];

		snprintf(cmd, sizeof(cmd), "nix-store --store '%s' --load-db < '%s' 2>/dev/null",
		         store, p);
		ck_assert_int_eq(system(cmd), 0);
	}
	sub(db, sizeof(db), "nix/nix/var/nix/db/db.sqlite");
	ctx = t_ctx();
	ck_assert_ok(
	    img_nixdb_closure(ctx, db, "/nix/store/0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-top", &c), ctx);
	ck_assert_uint_eq(c.npaths, 3);
	ck_assert_str_eq(c.paths[0], "/nix/store/0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-top");
	ck_assert_str_eq(c.paths[2], "/nix/store/2ccccccccccccccccccccccccccccccc-leaf");
	/* the registration as closureInfo writes it: top's record first, its
	 * references sorted (itself included), the NAR size kept */
	ck_assert_ptr_nonnull(
	    strstr(c.registration, "/nix/store/0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-top\nsha256:"));
	ck_assert_ptr_nonnull(
	    strstr(c.registration, "\n100\n\n2\n/nix/store/0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-top\n/"
	                           "nix/store/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-mid\n"));
	ck_assert_ptr_null(strstr(c.registration, "other"));
	ck_assert_uint_eq(c.registration_len, strlen(c.registration));
	img_nixdb_closure_release(&c);
	ck_assert_ok(
	    img_nixdb_closure(ctx, db, "/nix/store/2ccccccccccccccccccccccccccccccc-leaf", &c),
	    ctx);
	ck_assert_uint_eq(c.npaths, 1);
	img_nixdb_closure_release(&c);
	/* not valid there; not a database at all */
	ck_assert_int_eq(
	    img_nixdb_closure(ctx, db, "/nix/store/4eeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-no", &c),
	    -ENOENT);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "not a valid path in the Nix database"));
	ck_assert_int_lt(img_nixdb_closure(ctx, p, "/nix/store/x", &c), 0);
	ck_assert_ptr_nonnull(strstr(img_ctx_error(ctx), "Nix database"));
	img_ctx_free(ctx);
}
END_TEST

static TCase *tc(TCase *c, const TTest *const *tests, size_t n)
{
	tcase_add_checked_fixture(c, setup, teardown);
	tcase_set_timeout(c, 120);
	for (size_t i = 0; i < n; i++)
		_tcase_add_test(c, tests[i], 0, 0, 0, 1);
	return c;
}

Suite *img_test_suite(void);
Suite *img_test_suite(void)
{
	Suite *s = suite_create("vm");
	const TTest *argv_tests[] = { argv_efi_default,
		                      argv_name_memory_cores,
		                      argv_bios,
		                      argv_direct,
		                      argv_secure_boot,
		                      argv_tpm,
		                      argv_disks,
		                      argv_network,
		                      argv_vlans,
		                      argv_shares,
		                      argv_guest_agent_console_graphics,
		                      argv_qemu_opts_and_extra,
		                      argv_commas_doubled,
		                      argv_nix_env_paths,
		                      argv_cmdline_quoting,
		                      argv_system,
		                      system_kernel_override,
		                      argv_more_options };
	const TTest *fw_tests[] = { firmware_pick_and_filter, firmware_override_and_mask,
		                    firmware_parse_rules };
	const TTest *err_tests[] = { errors_bad_input, errors_specs, system_refusals };
	const TTest *nixdb_tests[] = { nixdb_closure };
	const TTest *boot_tests[] = { boot_detect, accel_auto };
	const TTest *state_tests[] = { state_prepare, state_ephemeral, state_port_in_use,
		                       state_lock, system_prepare };

	suite_add_tcase(s, tc(tcase_create("argv"), argv_tests, IMG_ARRAY_SIZE(argv_tests)));
	suite_add_tcase(s, tc(tcase_create("firmware"), fw_tests, IMG_ARRAY_SIZE(fw_tests)));
	suite_add_tcase(s, tc(tcase_create("errors"), err_tests, IMG_ARRAY_SIZE(err_tests)));
	suite_add_tcase(s, tc(tcase_create("boot"), boot_tests, IMG_ARRAY_SIZE(boot_tests)));
	suite_add_tcase(s, tc(tcase_create("state"), state_tests, IMG_ARRAY_SIZE(state_tests)));
	suite_add_tcase(s, tc(tcase_create("nixdb"), nixdb_tests, IMG_ARRAY_SIZE(nixdb_tests)));
	return s;
}
