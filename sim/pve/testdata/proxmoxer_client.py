"""An independent Proxmox client (Debian's python3-proxmoxer) driving a cluster:
list VMs, create one, wait for its task, read its config.

usage: proxmoxer_client.py HOST PORT token|password VMID [NODE]
env:   PVE_USER, PVE_TOKEN_NAME, PVE_TOKEN_VALUE (token) or PVE_PASSWORD (password);
       REQUESTS_CA_BUNDLE names the cluster CA, so TLS is verified.
"""
import os
import sys
import time

from proxmoxer import ProxmoxAPI

host, port, mode, vmid = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
node = sys.argv[5] if len(sys.argv) > 5 else 'pve1'
if mode == 'token':
    px = ProxmoxAPI(host, port=port, user=os.environ['PVE_USER'], token_name=os.environ['PVE_TOKEN_NAME'],
                    token_value=os.environ['PVE_TOKEN_VALUE'], verify_ssl=True)
else:
    px = ProxmoxAPI(host, port=port, user=os.environ['PVE_USER'], password=os.environ['PVE_PASSWORD'],
                    verify_ssl=True)

before = px.nodes(node).qemu.get()
upid = px.nodes(node).qemu.post(vmid=vmid, name='py%d' % vmid, memory=512, cores=1,
                                scsi0='local-lvm:1', net0='virtio,bridge=vmbr0')
assert upid.startswith('UPID:%s:' % node) and upid.endswith(':'), upid
deadline = time.time() + 30
while True:
    st = px.nodes(node).tasks(upid).status.get()
    if st['status'] == 'stopped':
        break
    assert time.time() < deadline, 'task did not finish: %r' % st
    time.sleep(0.1)
assert st['exitstatus'] == 'OK', st
assert isinstance(st['pid'], int) and isinstance(st['starttime'], int), st
cfg = px.nodes(node).qemu(vmid).config.get()
assert cfg['name'] == 'py%d' % vmid, cfg
assert cfg['scsi0'].startswith('local-lvm:vm-%d-disk-' % vmid), cfg
assert 'lock' not in cfg, cfg
after = px.nodes(node).qemu.get()
assert len(after) == len(before) + 1, (before, after)
log = px.nodes(node).tasks(upid).log.get()
assert log[-1]['t'] == 'TASK OK', log
print('OK vms=%d disk=%s' % (len(after), cfg['scsi0']))
