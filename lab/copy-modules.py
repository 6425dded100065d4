#!/usr/bin/env python3
"""Copy kernel modules and everything they depend on (modules.dep closure) into a root.

usage: copy-modules.py KERNEL_ROOT DEST_ROOT KVER MODULE...
Built-in modules are reported and skipped; an unknown name is an error.
"""
import os
import shutil
import sys

src, dst, kver, *wanted = sys.argv[1:]
base = os.path.join(src, 'lib/modules', kver)


def modname(path):
    return os.path.basename(path).split('.ko')[0].replace('-', '_')


deps, by_name = {}, {}
with open(os.path.join(base, 'modules.dep')) as f:
    for line in f:
        path, _, rest = line.partition(':')
        deps[path] = rest.split()
        by_name[modname(path)] = path
with open(os.path.join(base, 'modules.builtin')) as f:
    builtin = {modname(line.strip()) for line in f}

todo = []
for name in wanted:
    key = name.replace('-', '_')
    if key in by_name:
        todo.append(by_name[key])
    elif key in builtin:
        print(f'built in: {name}')
    else:
        sys.exit(f'unknown module: {name}')
done = set()
while todo:
    path = todo.pop()
    if path not in done:
        done.add(path)
        todo.extend(deps[path])
for path in sorted(done):
    target = os.path.join(dst, 'lib/modules', kver, path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(os.path.join(base, path), target)
for extra in ('modules.order', 'modules.builtin', 'modules.builtin.modinfo'):
    shutil.copy2(os.path.join(base, extra), os.path.join(dst, 'lib/modules', kver, extra))
print(f'{len(done)} modules copied for {kver}')
