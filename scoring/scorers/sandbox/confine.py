"""Confine the current process before it runs user code. Used by the sandbox runners only.

What it applies, all inherited by anything the process executes:
- resource limits: memory (RLIMIT_DATA: what the process can write, not its reservations, so
  that V8 can still reserve its address space), file size, open files, core dumps off;
- Landlock (Linux 5.13+): read and execute only under the given read-only paths, read and write
  only in the scratch directory; everything else (/etc/passwd, the project's settings and
  database, the home directory) cannot be opened. With Landlock ABI 4+, no TCP connect or bind;
- seccomp: no new sockets of any kind (so no network, not even a Unix socket to Redis or the
  database), no io_uring, no shared memory (which RLIMIT_DATA does not count), no new
  processes (threads are allowed), no privilege gain (no_new_privs);
- no capabilities, even when the worker runs as root; with Landlock ABI 6+, no signals to
  processes outside the sandbox (the worker among them).

Each layer is needed: Landlock does not cover Unix sockets or process creation, seccomp does not
cover files. Raises OSError when the kernel cannot apply one: a sandbox that cannot be built is
not started.
"""

import ctypes
import os
import platform
import resource
import struct

_libc = ctypes.CDLL(None, use_errno=True)

# Syscall numbers, by machine.
_SYSCALLS = {
    "x86_64": {"landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446,
               "socket": 41, "clone": 56, "fork": 57, "vfork": 58, "clone3": 435, "io_uring_setup": 425,
               "mmap": 9, "memfd_create": 319, "shmget": 29},
    "aarch64": {"landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446,
                "socket": 198, "clone": 220, "clone3": 435, "io_uring_setup": 425,
                "mmap": 222, "memfd_create": 279, "shmget": 194},
}  # fmt: skip
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# Landlock access rights (linux/landlock.h).
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ALL_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_RULE_PATH_BENEATH = 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_CLONE_THREAD = 0x00010000


def _syscall(name: str, *args) -> int:
    number = _SYSCALLS[platform.machine()][name]
    result = _libc.syscall(number, *args)
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")
    return result


def limit_resources(
    *, memory_bytes: int, cpu_seconds: int, file_bytes: int = 16 * 1024 * 1024, open_files: int = 64
) -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    # The soft limit sends SIGXCPU (which the pool reports as such); the hard one, SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def landlock(*, read_only: list[str], read_write: list[str]) -> int:
    """Restrict file access to these trees (and TCP to nothing, where the kernel can).
    Returns the Landlock ABI version applied."""
    abi = _syscall("landlock_create_ruleset", None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    handled_fs = _FS_ALL_BY_ABI[max(v for v in _FS_ALL_BY_ABI if v <= abi)]
    handled_net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    if abi >= 6:  # signals and abstract Unix sockets stay inside the sandbox
        attr = struct.pack("QQQ", handled_fs, handled_net, _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL)
    elif abi >= 4:
        attr = struct.pack("QQ", handled_fs, handled_net)
    else:
        attr = struct.pack("Q", handled_fs)
    ruleset = _syscall("landlock_create_ruleset", ctypes.c_char_p(attr), len(attr), 0)
    try:
        readable = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
        for paths, access in ((read_only, readable), (read_write, handled_fs)):
            for path in paths:
                if not os.path.exists(path):
                    continue
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                try:
                    # Files get only file rights; directories get all.
                    allowed = (
                        access
                        if os.path.isdir(path)
                        else access & (_FS_EXECUTE | _FS_READ_FILE | _FS_WRITE_FILE)
                    )
                    rule = struct.pack("=Qi", allowed, fd)  # landlock_path_beneath_attr is packed
                    _syscall("landlock_add_rule", ruleset, _RULE_PATH_BENEATH, ctypes.c_char_p(rule), 0)
                finally:
                    os.close(fd)
        _no_new_privileges()
        _syscall("landlock_restrict_self", ruleset, 0)
    finally:
        os.close(ruleset)
    return abi


def seccomp_no_sockets_no_processes() -> None:
    """A seccomp filter: socket() fails with EACCES; fork, vfork and clone without CLONE_THREAD
    fail with EPERM; clone3 fails with ENOSYS, so that threads fall back to clone; io_uring is
    unavailable (ENOSYS); so is shared memory that RLIMIT_DATA would not count (EPERM)."""
    machine = platform.machine()
    numbers = _SYSCALLS[machine]
    allow, kill = 0x7FFF0000, 0x80000000

    def errno(value: int) -> int:
        return 0x00050000 | value

    def stmt(code, k):
        return (code, 0, 0, k)

    def jeq(k, jt, jf=0):
        return (0x15, jt, jf, k)

    program = [
        stmt(0x20, 4),  # A = seccomp_data.arch
        jeq(_AUDIT_ARCH[machine], 1),
        stmt(0x06, kill),
        stmt(0x20, 0),  # A = seccomp_data.nr
    ]
    if machine == "x86_64":
        program += [(0x45, 0, 1, 0x40000000), stmt(0x06, kill)]  # x32 system calls
    refused = [(numbers["socket"], errno(13))]  # EACCES
    refused += [(numbers[name], errno(1)) for name in ("fork", "vfork") if name in numbers]  # EPERM
    refused += [(numbers["clone3"], errno(38))]  # ENOSYS
    refused += [(numbers["io_uring_setup"], errno(38))]  # its socket operations would bypass socket()
    # Shared memory is not counted by RLIMIT_DATA: no memfd, no System V segments, and (below)
    # no anonymous shared mappings.
    refused += [(numbers["memfd_create"], errno(1)), (numbers["shmget"], errno(1))]
    for number, action in refused:
        program += [jeq(number, 0, 1), stmt(0x06, action)]
    map_shared_anonymous = 0x01 | 0x20
    program += [
        jeq(numbers["mmap"], 0, 5),
        stmt(0x20, 40),  # A = low 32 bits of args[3], the mmap flags
        (0x54, 0, 0, map_shared_anonymous),  # A &= MAP_SHARED | MAP_ANONYMOUS
        jeq(map_shared_anonymous, 0, 1),
        stmt(0x06, errno(1)),
        stmt(0x06, allow),
    ]
    program += [
        jeq(numbers["clone"], 0, 3),
        stmt(0x20, 16),  # A = low 32 bits of args[0], the clone flags
        (0x45, 1, 0, _CLONE_THREAD),  # jset CLONE_THREAD: a thread
        stmt(0x06, errno(1)),
        stmt(0x06, allow),
    ]
    filters = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(filters)
    fprog = struct.pack("HxxxxxxP", len(program), ctypes.addressof(buffer))
    _no_new_privileges()
    if _libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        errno_value = ctypes.get_errno()
        raise OSError(errno_value, f"seccomp: {os.strerror(errno_value)}")


def drop_capabilities() -> None:
    """No capabilities, even when the worker runs as root: none now, none after execve."""
    for cap in range(64):
        if (
            _libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22
        ):  # PR_CAPBSET_DROP; EINVAL: no such cap
            errno_value = ctypes.get_errno()
            raise OSError(errno_value, f"capabilities: {os.strerror(errno_value)}")
    _libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    if _libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(bytes(24))) != 0:
        errno_value = ctypes.get_errno()
        raise OSError(errno_value, f"capset: {os.strerror(errno_value)}")


def _no_new_privileges() -> None:
    if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        errno_value = ctypes.get_errno()
        raise OSError(errno_value, f"no_new_privs: {os.strerror(errno_value)}")
