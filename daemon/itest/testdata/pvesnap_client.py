"""Independent clients of pvesnap's API: proxmox-csi-plugin's snapshot sequence in two client
styles, and the restore API driven by python3-proxmoxer.

  token-json  the CSI sequence exactly as go-proxmox sends it for the plugin: PVEAPIToken
              header, JSON bodies, User-Agent ProxmoxCSIPlugin/1.0 (with requests, since
              proxmoxer sends forms)
  password    the CSI sequence with python3-proxmoxer, a password ticket and CSRF token (forms)
  restore     python3-proxmoxer with an API token: list the VMs pvesnap knows, take an on-demand
              snapshot, find it among the VM's restore points, restore it as a new VM and
              follow the task

usage: pvesnap_client.py HOST PORT token-json|password STORAGE SOURCE TARGET
       pvesnap_client.py HOST PORT restore VMID SUFFIX NEWID EXPECT     (PVE_NODE: the node, pve1)
       (SUFFIX: of the on-demand snapshot restored; EXPECT: the restore task's exit status, or part of it)
"""
import os
import sys
import time

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

host, port, mode = sys.argv[1:4]
node = os.environ.get('PVE_NODE', 'pve1')
base = 'https://%s:%s/api2/json' % (host, port)


class JSONClient:
    def __init__(self):
        self.s = requests.Session()
        self.s.headers.update({
            'Authorization': 'PVEAPIToken=%s!%s=%s' % (os.environ['PVE_USER'], os.environ['PVE_TOKEN_NAME'],
                                                     os.environ['PVE_TOKEN_VALUE']),
            'User-Agent': 'ProxmoxCSIPlugin/1.0', 'Accept': 'application/json'})

    def call(self, method, path, body=None):
        r = self.s.request(method, base + path, json=body)
        assert r.status_code == 200, '%s %s: %d %s' % (method, path, r.status_code, r.reason)
        return r.json()['data']


class ProxmoxerClient:
    def __init__(self):
        self.px = ProxmoxAPI(host, port=int(port), user=os.environ['PVE_USER'], password=os.environ['PVE_PASSWORD'],
                             verify_ssl=True)

    def call(self, method, path, body=None):
        res = self.px
        for part in path.strip('/').split('/'):
            res = res(part)
        return getattr(res, method.lower())(**(body or {}))


def wait(px, upid, timeout=120):
    """Polls a task through pvesnap like any PVE client does, until it stops."""
    deadline = time.time() + timeout
    while True:
        st = px.nodes(node).tasks(upid).status.get()
        if st['status'] == 'stopped':
            return st
        assert time.time() < deadline, 'task did not finish: %r' % st
        time.sleep(0.2)


def restore(vmid, suffix, newid, expect):
    px = ProxmoxAPI(host, port=int(port), user=os.environ['PVE_USER'], token_name=os.environ['PVE_TOKEN_NAME'],
                    token_value=os.environ['PVE_TOKEN_VALUE'], verify_ssl=True)
    vms = px.nodes(node).pvesnap.vms.get()
    assert any(v['vmid'] == vmid for v in vms), vms
    before = [p['id'] for p in px.nodes(node).pvesnap.vms(vmid).get()['points']]
    upid = px.nodes(node).pvesnap.vms(vmid).snapshot.post(suffix=suffix)
    assert upid.startswith('UPID:%s:' % node), upid
    st = wait(px, upid)
    assert st['exitstatus'] == 'OK', st
    points = [p['id'] for p in px.nodes(node).pvesnap.vms(vmid).get()['points']]
    new = [p for p in points if p.endswith(':' + suffix)]
    assert len(new) == 1 and len(points) == len(before) + 1, (before, points)
    point = new[0]
    upid = px.nodes(node).pvesnap.restore.post(vmid=vmid, point=point, newid=newid)
    assert ':pvesnaprestore:%d:' % vmid in upid, upid
    st = wait(px, upid)
    assert expect in st['exitstatus'], st
    log = px.nodes(node).tasks(upid).log.get(limit=1000)
    assert log[-1]['t'].startswith('TASK '), log[-1]
    if st['exitstatus'] != 'OK':
        # A failed restore leaves no VM behind: pveproxy (through pvesnap) does not know it.
        try:
            px.nodes(node).qemu(newid).config.get()
            raise AssertionError('VM %d exists after a failed restore' % newid)
        except ResourceException as e:
            assert 'does not exist' in str(e), e
    print('OK restore %s of VM %d as %d: %s (%d log lines)' % (point, vmid, newid, st['exitstatus'], len(log)))


if mode == 'restore':
    restore(int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), sys.argv[7])
    sys.exit(0)

sid, source, target = sys.argv[4:7]
c = JSONClient() if mode == 'token-json' else ProxmoxerClient()
c.call('GET', '/storage/' + sid)
c.call('GET', '/nodes')
c.call('GET', '/nodes/%s/storage/%s/status' % (node, sid))
volid = '%s:%s' % (sid, source)
size = [v for v in c.call('GET', '/nodes/%s/storage/%s/content' % (node, sid)) if v['volid'] == volid][0]['size']
t0 = time.time()
upid = c.call('POST', '/nodes/%s/storage/%s/content/%s' % (node, sid, source), {'target': target})
st = c.call('GET', '/nodes/%s/tasks/%s/status' % (node, upid))
assert st['status'] == 'stopped' and st['exitstatus'] == 'OK', st
elapsed = time.time() - t0
new = [v for v in c.call('GET', '/nodes/%s/storage/%s/content' % (node, sid)) if v['volid'] == '%s:%s' % (sid, target)]
assert new and new[0]['size'] == size, new
upid = c.call('DELETE', '/nodes/%s/storage/%s/content/%s' % (node, sid, target))
for _ in range(30):
    st = c.call('GET', '/nodes/%s/tasks/%s/status' % (node, upid))
    if st['status'] == 'stopped':
        break
    time.sleep(1)
assert st['exitstatus'] == 'OK', st
left = [v for v in c.call('GET', '/nodes/%s/storage/%s/content' % (node, sid)) if v['volid'].endswith(target)]
assert not left, left
print('OK %s copy-to-task-OK %.0f ms, size %d' % (mode, elapsed * 1000, size))
