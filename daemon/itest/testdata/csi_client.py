"""proxmox-csi-plugin's snapshot sequence against pvesnap, in two client styles:

  token-json  exactly what go-proxmox sends for the plugin: PVEAPIToken header, JSON bodies,
              User-Agent ProxmoxCSIPlugin/1.0 (with requests, since proxmoxer sends forms)
  password    python3-proxmoxer with a password ticket and CSRF token (form bodies)

usage: csi_client.py HOST PORT MODE STORAGE SOURCE TARGET
"""
import os
import sys
import time

import requests
from proxmoxer import ProxmoxAPI

host, port, mode, sid, source, target = sys.argv[1:7]
node = 'pve1'
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
