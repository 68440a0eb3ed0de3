"""Hand-written mutants: plausible bugs that mutmut's operators do not write.

Each names one exact piece of text in one file, what it becomes, and the tests
that must notice. `mutate.py` applies one at a time to a scratch copy; a
mutant whose text no longer occurs is reported as "could not run" so this
list is kept in step with the code.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HandMutant:
    name: str
    package: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    why: str
    timeout: float = 900.0


MUTANTS: list[HandMutant] = [
    # --- storage: gc marks what tags reach, in every manifest shape (issue 17, bug 1)
    HandMutant("gc-forgets-recorded-manifests", "storage", "storage/gc.py",
               "known = {m.digest: m for m in store.recorded()}", "known = {}",
               ("tests/cli/test_gc_cli.py",),
               "gc would only follow manifests it happens to parse: tagged images lose layers"),
    HandMutant("gc-ignores-referrers", "storage", "storage/gc.py",
               "todo.extend((r, None) for r in referrers.get(digest, []))", "pass",
               ("tests/cli/test_gc_cli.py",),
               "a signature or SBOM of a kept image would be collected"),
    HandMutant("gc-ignores-declared-children", "storage", "storage/gc.py",
               "if m is None and declared in mt.ALL_MANIFESTS:", "if False:",
               ("tests/storage/test_model_refs.py", "tests/cli/test_gc_cli.py"),
               "children an index declares but the store never recorded would be collected"),
    # --- storage: the reference grammar is ASCII and matched whole (issue 17, bug 2)
    HandMutant("tag-grammar-prefix-match", "storage", "storage/references.py",
               "        if not TAG_RE.fullmatch(tag):\n            raise InvalidReference(f\"invalid reference {text!r}: bad tag",
               "        if not TAG_RE.match(tag):\n            raise InvalidReference(f\"invalid reference {text!r}: bad tag",
               ("tests/storage/test_model_refs.py", "tests/cli/test_images_cli.py"),
               "`latest\\n` or `t\u00e4g!` would pass as a tag"),
    HandMutant("tag-grammar-unicode-word", "storage", "storage/references.py",
               "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", "[\\w][\\w.-]{0,127}",
               ("tests/storage/test_model_refs.py", "tests/registry/test_reference_grammar.py"),
               "non-ASCII tags such as t\u00e4g would be accepted"),
    # --- storage: sizes and boundaries
    HandMutant("load-trusts-descriptor-size", "storage", "storage/archives/load.py",
               "    if m.size != d.size:", "    if m.size < d.size:",
               ("tests/cli/test_archive_errors.py", "tests/storage"),
               "a blob longer than its descriptor would load"),
    HandMutant("images-lists-index-children", "storage", "storage/images.py",
               "            if name is None and digest in listed:\n                continue", "            pass",
               ("tests/cli/test_images_cli.py",),
               "soko images would show each platform manifest of an index as a <none> row"),
    # --- storage: host safety (issue 9)
    HandMutant("private-dirs-world-readable", "storage", "storage/private.py",
               "PRIVATE = 0o700", "PRIVATE = 0o755",
               ("tests/storage/test_private.py", "tests/cli/test_store_private.py"),
               "other host users could reach setuid files in unpacked layers"),
    HandMutant("output-temp-follows-links", "storage", "storage/outfile.py",
               "os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC",
               "os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC",
               ("tests/storage/test_outfile.py", "tests/cli/test_output_files.py"),
               "a temp name planted by another user would be followed or reused"),
    HandMutant("gc-deletes-busy-ingest", "storage", "storage/content/dirwriter.py",
               "            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n        except BlockingIOError:\n            return False",
               "            pass\n        except BlockingIOError:\n            return False",
               ("tests/registry/test_hostile_uploads.py", "tests/registry/test_gc.py"),
               "gc would remove the file of an upload still being received"),
    # --- registry client: credentials, retries (issue 17)
    HandMutant("redirect-keeps-credentials", "registry", "registry/client/wire_std.py",
               'headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}', "pass",
               ("tests/client/test_client_redirects.py",),
               "a blob redirect would hand the registry's credentials to a CDN"),
    HandMutant("ping-ignores-retry-after", "registry", "registry/client/session.py",
               "hint = retry_after(resp.headers)", "hint = None",
               ("tests/client/test_client_resilience.py", "tests/client/test_client_retries.py"),
               "the client would hammer a registry that asked it to wait"),
    HandMutant("retries-one-too-many", "registry", "registry/client/session.py",
               "                if attempt >= max_retries:", "                if attempt > max_retries:",
               ("tests/client/test_client_retries.py",),
               "the client would not give up after the configured attempts"),
    # --- registry server: hostile clients (issue 9)
    HandMutant("auth-no-dummy-hash", "registry", "registry/server/passwords.py",
               "ok = bcrypt.checkpw(secret if usable else secret[:BCRYPT_MAX], found[1] if usable else self._dummy)",
               "ok = usable and bcrypt.checkpw(secret, found[1])",
               ("tests/registry/test_auth_hardening.py",),
               "unknown users would answer fast: user names leak by timing"),
    # --- runtime: capabilities, seccomp, dying with soko (issues 9, 17)
    HandMutant("caps-bounding-kept", "runtime", "runtime/child.py",
               "            sc.prctl(sc.PR_CAPBSET_DROP, cap)", "            pass",
               ("tests/runtime/test_isolation.py",),
               "the bounding set would keep every capability"),
    HandMutant("caps-inheritable-leak", "runtime", "runtime/child.py",
               "    sc.capset(effective, permitted, inheritable)", "    sc.capset(effective, permitted, permitted)",
               ("tests/runtime/test_isolation.py",),
               "capabilities would be inheritable across exec"),
    HandMutant("seccomp-not-installed", "runtime", "runtime/child.py",
               "        sc.seccomp_filter(s.seccomp_filter)", "        pass",
               ("tests/runtime/test_seccomp.py",),
               "the built-in executor would run without Docker's seccomp profile"),
    HandMutant("no-pdeathsig", "runtime", "runtime/child.py",
               "    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)", "    pass",
               ("tests/runtime/test_cleanup.py",),
               "a foreground container would outlive a killed soko"),
    # --- storage: one path walk (issue 9 item 12)
    HandMutant("pathwalk-dotdot-escapes-refuse", "storage", "storage/pathwalk.py",
               "            elif dotdot is REFUSE:\n                raise PathEscape(shown, via)",
               "            elif False:\n                raise PathEscape(shown, via)",
               ("tests/storage/test_pathwalk.py", "tests/storage/test_layers_security.py"),
               "a layer entry climbing above the root would be applied"),
    HandMutant("pathwalk-more-links", "storage", "storage/pathwalk.py",
               "MAX_SYMLINKS = 40", "MAX_SYMLINKS = 41",
               ("tests/storage/test_pathwalk.py",),
               "a lookup would follow more symlinks than Linux does"),
    # --- builder: cache keys (issue 17)
    HandMutant("copy-key-without-chown", "builder", "builder/copy.py",
               '"chown": chown_spec, "chmod": chmod_spec,', '"chmod": chmod_spec,',
               ("tests/builder/test_cache_keys.py",),
               "changing COPY --chown would reuse the old layer"),
    # --- builder: ARG scope (issue 17)
    HandMutant("arg-global-without-redeclare", "builder", "builder/args.py",
               "        else:\n            value = self.global_scope.values.get(name)",
               "        else:\n            value = None",
               ("tests/builder/test_args.py",),
               "`ARG NAME` in a stage would not take the global default"),
]
