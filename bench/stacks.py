#!/usr/bin/env python3
"""Summarise `perf script -F tid,ip,sym --no-inline` output of a healgate profile.

usage: perf script -i perf.data -F tid,ip,sym --no-inline | bench/stacks.py
Prints: the kernel share by syscall, the allocator share, and the callees of
healgate::proxy::forward::handle (inclusive), all as % of the gateway's samples.
"""
import re
import sys
from collections import Counter

samples = []
cur = None
for line in sys.stdin:
    if not line.strip():
        if cur:
            samples.append(cur)
        cur = None
        continue
    if not line.startswith(('\t', ' ')) or re.match(r'^\d+\s*$', line):
        cur = []
        continue
    parts = line.strip().split(None, 1)
    if cur is not None and len(parts) == 2:
        cur.append(parts[1])
if cur:
    samples.append(cur)
N = len(samples)
print(f"samples: {N}")

def pct(c):
    return f"{100.0 * c / N:5.1f}%"

# 1. syscalls (inclusive, by the user-space wrapper or the kernel entry)
SYS = [('writev', r'__GI___writev|do_writev'), ('recv', r'__libc_recv|__sys_recvfrom'),
       ('epoll_wait', r'epoll_wait'), ('accept/setsockopt/other syscalls', r'entry_SYSCALL')]
sysc = Counter()
for s in samples:
    for name, rx in SYS:
        if any(re.search(rx, f) for f in s):
            sysc[name] += 1
            break
    else:
        if any(f.startswith(('asm_', 'irq', 'sysvec')) or 'softirq' in f for f in s):
            sysc['interrupts (not in a syscall)'] += 1
print("\n== time inside syscalls (inclusive, kernel + libc wrapper) ==")
for k, v in sysc.most_common():
    print(f"{pct(v)}  {k}")

# 2. allocator (inclusive: malloc/free/realloc and their internals)
ALLOC = re.compile(r'^(malloc|free|cfree|realloc|calloc|_int_malloc|_int_free|_int_realloc|'
                   r'malloc_consolidate|unlink_chunk.*|__libc_(malloc|free|realloc|calloc).*|'
                   r'__rust_(alloc|dealloc|realloc).*|__rdl_.*)(@.*)?$')
alloc = sum(1 for s in samples if any(ALLOC.match(f) for f in s[:6]))
print(f"\n== allocator (malloc/free/realloc incl. internals): {pct(alloc)} ==")
callers = Counter()
for s in samples:
    idx = [i for i, f in enumerate(s[:8]) if ALLOC.match(f)]
    if not idx:
        continue
    j = max(idx) + 1
    while j < len(s) and (s[j].startswith(('alloc::', 'core::ptr::drop_in_place', '<alloc::', 'core::ptr'))
                          or 'RawVec' in s[j] or 'drop_in_place' in s[j]):
        j += 1
    callers[s[j] if j < len(s) else '?'] += 1
for k, v in callers.most_common(12):
    print(f"{pct(v)}  {k[:150]}")

# 3. callees of handle
H = 'healgate::proxy::forward::handle::{{closure}}'
hs = [s for s in samples if H in s]
print(f"\n== {H}: {pct(len(hs))} inclusive; its direct callees ==")
cal = Counter()
for s in hs:
    i = s.index(H)
    cal[s[i - 1] if i > 0 else '(self)'] += 1
for k, v in cal.most_common(20):
    print(f"{pct(v)}  {k[:150]}")

# 4. every healgate:: function, inclusive, excluding the drivers that wrap hyper
DRIVERS = ('healgate::cli::main', 'healgate::run::run', 'healgate::proxy::server::serve',
           'healgate::upstream::conn::Connector::handshake', 'healgate::proxy::server::connection')
inc = Counter()
for s in samples:
    seen = set()
    for f in s:
        if f.startswith(('healgate::', '<healgate::')) and not f.startswith(DRIVERS) and f not in seen:
            seen.add(f)
            inc[f] += 1
print("\n== healgate functions, inclusive (drivers excluded) ==")
for k, v in inc.most_common(25):
    print(f"{pct(v)}  {k[:150]}")
