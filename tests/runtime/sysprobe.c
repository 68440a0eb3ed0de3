/* sysprobe: tries system calls a container must not (or must) be able to make and
 * prints "name=ok" or "name=ERRNO_NUMBER" per line, for the seccomp tests.
 * Built static (gcc -static) so it runs in any image. Every call is harmless if let
 * through (bad arguments, missing paths, namespaces made in a child that exits). x86_64 only: it also makes
 * i386 calls through int $0x80 and x32 calls (bit 30 set in the number). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long ret) {
    if (ret < 0) printf("%s=%d\n", name, errno);
    else printf("%s=ok\n", name);
}

/* Calls that change the caller (new namespaces) run in a child; its exit status carries errno. */
static void report_in_child(const char *name, long nr, long a) {
    int status = 0;
    pid_t pid = fork();
    if (pid == 0) {
        long ret = nr == SYS_clone ? syscall(SYS_clone, a, 0, 0, 0, 0) : syscall(nr, a);
        if (ret == 0 && nr == SYS_clone) _exit(0);  /* the clone's own child */
        if (ret > 0) waitpid(ret, NULL, __WALL);
        _exit(ret < 0 ? errno : 0);
    }
    waitpid(pid, &status, 0);
    if (WEXITSTATUS(status)) printf("%s=%d\n", name, WEXITSTATUS(status));
    else printf("%s=ok\n", name);
}

static long int80(long nr, long a, long b) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "0"(nr), "b"(a), "c"(b) : "memory");
    if (ret < 0 && ret > -4096) { errno = -ret; return -1; }
    return ret;
}

int main(int argc, char **argv) {
    char handle[64] = {0};
    report_in_child("unshare", SYS_unshare, CLONE_NEWUSER);
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -2 /* process keyring */, 1));
    report("add_key", syscall(SYS_add_key, "user", "soko-probe", "x", 1, -2));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0xffff0000UL /* invalid flags: EINVAL if let through */));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, handle, 0));
    report("mount", syscall(SYS_mount, "none", "/sysprobe-no-such-dir", "tmpfs", 0, 0));
    report("clone3", syscall(SYS_clone3, 0, 0));
    report_in_child("clone_newns", SYS_clone, CLONE_NEWNS | SIGCHLD);
    report_in_child("clone_plain", SYS_clone, SIGCHLD);
    report("personality_query", syscall(SYS_personality, 0xffffffffUL));
    report("personality_other", syscall(SYS_personality, 0x0400000UL /* ADDR_COMPAT_LAYOUT */));
    report("socket_vsock", syscall(SYS_socket, 40 /* AF_VSOCK */, 1, 0));
    report("socket_unix", syscall(SYS_socket, 1 /* AF_UNIX */, 1, 0));
    report("getpid", syscall(SYS_getpid));
    report("unknown_1000", syscall(1000));
    report_in_child("x32_unshare", 0x40000000 | SYS_unshare, CLONE_NEWUSER);
    report("x32_getpid", syscall(0x40000000 | SYS_getpid));
    if (argc > 1 && strcmp(argv[1], "i386") == 0) {
        report("i386_getpid", int80(20, 0, 0));
        report("i386_unshare", int80(310, CLONE_NEWUSER, 0));
        report("i386_keyctl", int80(288, 0, -2));
    }
    return 0;
}
