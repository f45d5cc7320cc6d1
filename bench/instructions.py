#!/usr/bin/env python3
"""Instructions per request from callgrind dumps of N requests, split by phase.

Usage: instructions.py NAME=N:DUMP... [--top K [--show PHASE]]
(each contestant's name, the requests its dump holds and the dump; the last
is the baseline of the ratio row. --top lists the K functions that cost
PHASE most, default "other")

Every function's own (exclusive) instructions are given to a phase by its
name (PHASES, first match wins). Shared helpers — the allocator, memcpy, std,
core, formatting, hashing, serde — have no phase of their own: their cost
goes to the phases of their callers, in proportion to what each caller spent
in them (callgrind's call costs), climbing until a caller has a phase. So the
phases add up to the total, and "front" holds hyper's allocations, "store"
the WASI context's, and so on. Names are matched as callgrind demangles them.
"""
import collections
import re
import sys

# (phase, pattern on "object:function"); first match wins.
PHASES = [
    ("guest code", r"^\?\?\?:0x|^\?\?\?:\?\?\?$|vm::libcalls"),
    ("store", r"HostState::new|new_store|WasiCtxBuilder|WasiCtx::|StoreOpaque::new|Store<T>::new|StoreInner|"
              r"ResourceTable::new|cap_rand|rand_core|rand::|WasiHttpCtx|OutboundHttp::new|GuestOutput|Limiter|Store<T>::try_new"),
    ("drop", r"drop_in_place<wasmtime::runtime::store|<wasmtime::runtime::store::StoreOpaque as core::ops::drop|"
             r"drop_in_place<wasmtime::runtime::store::StoreInner|deallocate|decommit|reset_with_pagemap|"
             r"PageMap|pagemap|madvise|MemoryImageSlot::(clear|reset)|drop_in_place<wasmtime::runtime::vm::instance"),
    ("instantiate", r"instantiate|InstancePre|component::instance|runtime::vm::instance|InstanceAllocator|"
                    r"pooling|MemoryImageSlot|runtime::vm::cow|OnDemandInstanceAllocator|vmctx|VMContext|"
                    r"initialize_vmctx|ComponentInstance|allocate_instance|ModuleRegistry|store_code|"
                    r"store_invariant_func|OwnedImports|func_loc|FuncKey|CompiledFunctionsTable|"
                    r"VMComponentOffsets|vm::table|vm::memory|EngineCode|TryPrimaryMap|btree_map|"
                    r"cranelift_bforest"),
    ("call", r"fiber|component::func|TypedFunc|call_async|runtime::func|::lift|::lower|lift_|lower_|trampoline|"
             r"wasmhost::instance::Handler|call_handle|typecheck|Lift|Lower|ComponentType|raise_trap|"
             r"epoch|CallHook|call_hook|Trap|traphandlers|enter_guest|CanonicalAbiInfo|typed::"),
    ("host calls", r"wasmhost::capabilities|wasmtime_wasi|redb::|wasmhost::kv|wasmhost::bindings|"
                   r"wasmtime::runtime::component::linker|HostContext|func::host|resource_table|"
                   r"handle_table|component_resource_tables"),
    ("routing, policy, metrics", r"wasmhost::dispatch|wasmhost::release|wasmhost::metrics|wasmhost::registry|"
                                 r"wasmhost::resilience|wasmhost::error|arc_swap|wasmhost::control|wasmhost::canary"),
    ("HTTP front", r"hyper|axum|tower|http::|httparse|h2::|wasmhost::front|wasmhost::server|wasmhost::contract|"
                   r"wasmhost::router|http_body|httpdate|wasmhost::health|wasmhost::shutdown|matchit"),
    ("tokio runtime", r"tokio::|mio::|parking_lot|crossbeam|futures_util|futures_core|std::sys::.*thread|"
                      r"epoll|syscall"),
    ("wasmtime (other)", r"wasmtime"),
]
# Helpers whose cost goes to their callers.
SHARED = re.compile(r"libc\.so|ld-linux|malloc|free|memcpy|memmove|memset|memcmp|strlen|realloc|calloc|"
                    r"alloc::|core::|std::|hashbrown|serde|tracing|bytes::|smallvec|indexmap|itoa|ryu|"
                    r"__rust|_rjem|fastrand|sha2|hex::|semver|log::|once_cell|anyhow|thiserror|"
                    r"vgpreload|^\?\?\?:(clone|start_thread)|<&T as|<T as")


def resolve(table, text):
    """Callgrind's name compression: "(id) name" defines, "(id)" refers."""
    m = re.match(r"\((\d+)\)(?: (.*))?$", text)
    if not m:
        return text
    if m.group(2) is not None:
        table[m.group(1)] = m.group(2)
    return table.get(m.group(1), text)


def parse(path):
    fns, objs = {}, {}
    own = collections.Counter()
    callers = collections.defaultdict(collections.Counter)  # callee -> caller -> inclusive
    obj_of = {}
    fn = obj = callee = cobj = None
    in_call = False
    total = 0
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        if line.startswith("totals:"):
            total = int(line.split()[1])
        elif line.startswith("ob="):
            obj = resolve(objs, line[3:])
        elif line.startswith("fn="):
            fn = resolve(fns, line[3:])
            obj_of.setdefault(fn, obj)
        elif line.startswith("cob="):
            cobj = resolve(objs, line[4:])
        elif line.startswith("cfn="):
            callee = resolve(fns, line[4:])
            if cobj is not None:
                obj_of.setdefault(callee, cobj)
            cobj = None
        elif line.startswith("calls="):
            in_call = True
        elif line[0].isdigit() or line[0] in "+-*":
            parts = line.split()
            if len(parts) < 2:
                continue
            ir = int(parts[1])
            if in_call:
                callers[callee][fn] += ir
                in_call = False
            else:
                own[fn] += ir
    return total, own, callers, obj_of


def label(fn, obj_of):
    obj = (obj_of.get(fn) or "???").rsplit("/", 1)[-1]
    return f"{obj}:{fn}"


def phase_of(name):
    for phase, pattern in PHASES:
        if re.search(pattern, name):
            return phase
    return None


def split(path):
    total, own, callers, obj_of = parse(path)
    dists = {}

    def dist(fn, depth=0):
        """Where `fn`'s own cost goes: {phase: fraction}."""
        if fn in dists:
            return dists[fn]
        name = label(fn, obj_of)
        if not SHARED.search(name):
            d = {(phase_of(name) or "other", name): 1.0}
        else:
            dists[fn] = {("other", name): 1.0}  # a cycle lands here
            up = {c: ir for c, ir in callers.get(fn, {}).items() if c != fn}
            weight = sum(up.values())
            if depth > 40 or not weight:
                return dists[fn]
            d = collections.Counter()
            for caller, ir in up.items():
                for phase, frac in dist(caller, depth + 1).items():
                    d[phase] += frac * ir / weight
        dists[fn] = d
        return d

    phases = collections.Counter()
    owners = collections.defaultdict(collections.Counter)
    for fn, ir in own.items():
        for (phase, owner), frac in dist(fn).items():
            phases[phase] += ir * frac
            owners[phase][owner] += ir * frac
    return total, phases, owners


def main():
    args = sys.argv[1:]
    top, show = 0, "other"
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        del args[i : i + 2]
    if "--show" in args:
        i = args.index("--show")
        show = args[i + 1]
        del args[i : i + 2]
    # Each contestant: NAME=N:DUMP (N requests in the dump); the last is the baseline.
    runs = []
    for arg in args:
        name, rest = arg.split("=", 1)
        n, path = rest.split(":", 1)
        runs.append((name, int(n), split(path)))
    order = [p for p, _ in PHASES] + ["other"]
    base = runs[-1][2][0] / runs[-1][1]
    width = max(18, *(len(name) + 2 for name, _, _ in runs))
    print(f"{'instructions per request':<28}" + "".join(f"{name:>{width}}" for name, _, _ in runs))
    for phase in order:
        if not any(r[1].get(phase) for _, _, r in runs):
            continue
        print(f"{phase:<28}" + "".join(f"{r[1].get(phase, 0) / n:>{width},.0f}" for _, n, r in runs))
    print(f"{'total':<28}" + "".join(f"{r[0] / n:>{width},.0f}" for _, n, r in runs))
    print(f"{'÷ ' + runs[-1][0]:<28}" + "".join(f"{r[0] / n / base:>{width}.2f}" for _, n, r in runs))
    if top:
        for name, n, (_, _, owners) in runs:
            print(f"\n{name}: largest costs in {show}")
            for fn, ir in owners[show].most_common(top):
                print(f"  {ir / n:>10,.0f}  {fn[:160]}")


if __name__ == "__main__":
    main()
