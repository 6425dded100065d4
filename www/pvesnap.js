/*
 * pvesnap panel for the Proxmox VE web UI: arrays, storage mapping, the VM -> restore point
 * -> disk tree, snapshot now, restore. Plain Ext JS classic classes (Ext JS 6 and 7); Proxmox
 * helpers are used only where present. No 'use strict': it breaks Ext's callParent().
 *
 * Loaded after pvemanagerlib.js, either injected by pvesnap into the GUI page it passes
 * through on :8009 (same origin) or by pvehook into pveproxy's page on :8006 (then the API
 * calls go to :8009 with CORS, the user's ticket cookie and CSRF token).
 */
(function () {
    var PS = window.PVESnap = window.PVESnap || {};

    // Loaded from /pvesnap/ui/, the page came through pvesnap: the API is on the same origin.
    // Loaded from /pve2/js/ (pvehook on :8006), the API is on pvesnap's port (PS.apiPort).
    var src = (document.currentScript && document.currentScript.src) || '';
    PS.servedByPvesnap = src.indexOf('/pvesnap/ui/') >= 0;
    PS.apiPort = PS.apiPort || 8009;

    PS.sameOrigin = function () {
        return PS.servedByPvesnap || window.location.port === String(PS.apiPort);
    };

    PS.apiBase = function () {
        return PS.sameOrigin() ? '/api2/json' : 'https://' + window.location.hostname + ':' + PS.apiPort + '/api2/json';
    };

    PS.node = function () {
        return (window.Proxmox && Proxmox.NodeName) || 'localhost';
    };

    PS.csrf = function () {
        return (window.Proxmox && Proxmox.CSRFPreventionToken) || '';
    };

    PS.gettext = function (s) {
        return typeof window.gettext === 'function' ? window.gettext(s) : s;
    };

    // errorText turns a failed answer into PVE's message and any per-parameter errors.
    PS.errorText = function (resp) {
        var msg = resp.statusText || ('HTTP ' + resp.status);
        try {
            var d = Ext.decode(resp.responseText, true);
            if (d && d.errors) {
                Ext.Object.each(d.errors, function (k, v) {
                    msg += '\n' + k + ': ' + v;
                });
            }
        } catch (e) { /* not JSON: the status line is the message */ }
        return msg;
    };

    // request calls the pvesnap API: opts.url below /api2/json, opts.method, opts.params.
    PS.request = function (opts) {
        var method = opts.method || 'GET';
        var cfg = {
            url: PS.apiBase() + opts.url,
            method: method,
            headers: { CSRFPreventionToken: PS.csrf() },
            withCredentials: !PS.sameOrigin(),
            cors: !PS.sameOrigin(),
            timeout: 120000,
            success: function (resp) {
                var d = Ext.decode(resp.responseText, true) || {};
                if (opts.success) { opts.success(d.data); }
            },
            failure: function (resp) {
                if (opts.failure) { opts.failure(PS.errorText(resp), resp.status); } else { PS.alert(PS.errorText(resp)); }
            }
        };
        cfg.params = opts.params; // the query for GET and DELETE, a form body otherwise
        Ext.Ajax.request(cfg);
    };

    PS.alert = function (msg) {
        Ext.Msg.alert(PS.gettext('Error'), Ext.htmlEncode(msg).replace(/\n/g, '<br>'));
    };

    PS.fmtTime = function (ms) {
        if (!ms) { return '-'; }
        return Ext.Date.format(new Date(ms), 'Y-m-d H:i:s');
    };

    PS.url = function (path) {
        return '/nodes/' + encodeURIComponent(PS.node()) + '/pvesnap' + path;
    };

    // showTask follows a task: Proxmox's own task viewer when present, else a small window.
    PS.showTask = function (upid, onDone) {
        if (window.Proxmox && Proxmox.window && Proxmox.window.TaskViewer && !PS.ownTaskWindow) {
            var tv = Ext.create('Proxmox.window.TaskViewer', { upid: upid });
            if (onDone) { tv.on('destroy', onDone); }
            tv.show();
            return tv;
        }
        var w = Ext.create('PVESnap.TaskWindow', { upid: upid, onDone: onDone });
        w.show();
        return w;
    };

    Ext.define('PVESnap.TaskWindow', {
        extend: 'Ext.window.Window',
        alias: 'widget.pvesnapTaskWindow',
        width: 760,
        height: 420,
        layout: 'fit',
        modal: false,
        title: PS.gettext('Task'),
        initComponent: function () {
            var me = this;
            me.node = me.upid.split(':')[1];
            me.items = [{
                xtype: 'textarea',
                itemId: 'log',
                readOnly: true,
                fieldStyle: 'font-family: monospace; font-size: 12px;'
            }];
            me.bbar = [{ xtype: 'tbtext', itemId: 'status', text: PS.gettext('running') }];
            me.callParent();
            me.timer = window.setInterval(function () { me.poll(); }, 1000);
            me.on('destroy', function () { window.clearInterval(me.timer); });
            me.poll();
        },
        poll: function () {
            var me = this;
            var base = '/nodes/' + encodeURIComponent(me.node) + '/tasks/' + encodeURIComponent(me.upid);
            PS.request({
                url: base + '/log', params: { limit: 5000 },
                success: function (lines) {
                    if (me.isDestroyed || !lines) { return; }
                    me.down('#log').setValue(Ext.Array.map(lines, function (l) { return l.t; }).join('\n'));
                }
            });
            PS.request({
                url: base + '/status',
                success: function (st) {
                    if (me.isDestroyed || !st) { return; }
                    var text = st.status === 'stopped' ? PS.gettext('stopped') + ': ' + st.exitstatus : PS.gettext('running');
                    me.down('#status').setText(text);
                    me.taskStatus = st;
                    if (st.status === 'stopped') {
                        window.clearInterval(me.timer);
                        if (me.onDone) { me.onDone(st); me.onDone = null; }
                    }
                }
            });
        }
    });

    // Arrays: add, edit, test, remove.
    Ext.define('PVESnap.ArrayEdit', {
        extend: 'Ext.window.Window',
        alias: 'widget.pvesnapArrayEdit',
        width: 480,
        modal: true,
        layout: 'fit',
        initComponent: function () {
            var me = this;
            var create = !me.arrayId;
            me.title = create ? PS.gettext('Add FlashArray') : PS.gettext('Edit') + ': ' + me.arrayId;
            me.items = [{
                xtype: 'form',
                bodyPadding: 10,
                defaults: { anchor: '100%', labelWidth: 130 },
                items: [
                    { xtype: 'textfield', name: 'array', fieldLabel: PS.gettext('ID'), allowBlank: false, disabled: !create, value: me.arrayId,
                      regex: /^[a-z][a-z0-9_.-]{0,38}[a-z0-9]$/ },
                    { xtype: 'textfield', name: 'endpoint', fieldLabel: PS.gettext('Management address'), allowBlank: !create,
                      emptyText: 'https://array.example.com' },
                    { xtype: 'textfield', name: 'token', inputType: 'password', fieldLabel: PS.gettext('API token'), allowBlank: !create,
                      emptyText: create ? '' : PS.gettext('unchanged') },
                    { xtype: 'textfield', name: 'ca', fieldLabel: PS.gettext('CA file'), emptyText: PS.gettext('system CAs') },
                    { xtype: 'textfield', name: 'hostgroup', fieldLabel: PS.gettext('Host group'), emptyText: PS.gettext('match this node by initiator') },
                    { xtype: 'textfield', name: 'comment', fieldLabel: PS.gettext('Comment') }
                ]
            }];
            me.buttons = [{
                text: create ? PS.gettext('Add') : PS.gettext('OK'),
                itemId: 'submit',
                handler: function () {
                    var form = me.down('form').getForm();
                    if (!form.isValid()) { return; }
                    var v = form.getValues();
                    var params = {};
                    Ext.Object.each(v, function (k, val) { if (val !== '') { params[k] = val; } });
                    if (create) { params.type = 'flasharray'; }
                    me.setLoading(true);
                    PS.request({
                        url: create ? '/cluster/pvesnap/arrays' : '/cluster/pvesnap/arrays/' + me.arrayId,
                        method: create ? 'POST' : 'PUT',
                        params: params,
                        success: function () { me.close(); if (me.onSaved) { me.onSaved(); } },
                        failure: function (msg) { me.setLoading(false); PS.alert(msg); }
                    });
                }
            }];
            me.callParent();
            if (!create) {
                PS.request({
                    url: '/cluster/pvesnap/arrays/' + me.arrayId,
                    success: function (d) { me.down('form').getForm().setValues(d); }
                });
            }
        }
    });

    Ext.define('PVESnap.ArrayGrid', {
        extend: 'Ext.grid.Panel',
        alias: 'widget.pvesnapArrays',
        title: PS.gettext('Arrays'),
        emptyText: PS.gettext('No array configured'),
        initComponent: function () {
            var me = this;
            me.store = Ext.create('Ext.data.Store', { fields: ['array', 'type', 'endpoint', 'hostgroup', 'comment', 'disable'] });
            me.columns = [
                { text: PS.gettext('ID'), dataIndex: 'array', width: 120 },
                { text: PS.gettext('Type'), dataIndex: 'type', width: 90 },
                { text: PS.gettext('Management address'), dataIndex: 'endpoint', flex: 1 },
                { text: PS.gettext('Host group'), dataIndex: 'hostgroup', width: 120 },
                { text: PS.gettext('Comment'), dataIndex: 'comment', flex: 1 }
            ];
            var sel = function () { return me.getSelection()[0]; };
            me.tbar = [
                { text: PS.gettext('Add'), itemId: 'add', handler: function () {
                    Ext.create('PVESnap.ArrayEdit', { onSaved: function () { me.reload(); } }).show();
                } },
                { text: PS.gettext('Edit'), itemId: 'edit', disabled: true, handler: function () {
                    Ext.create('PVESnap.ArrayEdit', { arrayId: sel().get('array'), onSaved: function () { me.reload(); } }).show();
                } },
                { text: PS.gettext('Test'), itemId: 'test', disabled: true, handler: function () {
                    var id = sel().get('array');
                    me.setLoading(true);
                    PS.request({
                        url: '/cluster/pvesnap/arrays/' + id + '/status',
                        success: function (st) {
                            me.setLoading(false);
                            Ext.Msg.alert(id, Ext.htmlEncode(st.array_name + ' (Purity ' + st.purity + ', REST ' + st.rest_version + ')') + '<br>' +
                                Ext.htmlEncode(st.target ? PS.gettext('Volumes connect to') + ' ' + st.target : st.target_error));
                        },
                        failure: function (msg) { me.setLoading(false); PS.alert(msg); }
                    });
                } },
                { text: PS.gettext('Remove'), itemId: 'remove', disabled: true, handler: function () {
                    var id = sel().get('array');
                    Ext.Msg.confirm(PS.gettext('Confirm'), Ext.String.format(PS.gettext('Remove array {0} from pvesnap? Nothing on the array is touched.'), Ext.htmlEncode(id)),
                        function (b) {
                            if (b === 'yes') {
                                PS.request({ url: '/cluster/pvesnap/arrays/' + id, method: 'DELETE', success: function () { me.reload(); } });
                            }
                        });
                } }
            ];
            me.callParent();
            me.on('selectionchange', function (m, s) {
                Ext.Array.each(['edit', 'test', 'remove'], function (id) { me.down('#' + id).setDisabled(!s.length); });
            });
            me.reload();
        },
        reload: function () {
            var me = this;
            PS.request({ url: '/cluster/pvesnap/arrays', success: function (d) { me.store.loadData(d || []); } });
        }
    });

    Ext.define('PVESnap.StorageGrid', {
        extend: 'Ext.grid.Panel',
        alias: 'widget.pvesnapStorages',
        title: PS.gettext('Storage mapping'),
        emptyText: PS.gettext('No LVM storage on this node'),
        initComponent: function () {
            var me = this;
            me.store = Ext.create('Ext.data.Store', { fields: ['storage', 'vg', 'pvs', 'serial', 'identity', 'array', 'volume', 'state', 'reason'] });
            me.columns = [
                { text: PS.gettext('Storage'), dataIndex: 'storage', width: 110 },
                { text: 'VG', dataIndex: 'vg', width: 100 },
                { text: PS.gettext('State'), dataIndex: 'state', width: 130, renderer: function (v) {
                    var color = v === 'mapped' ? 'green' : 'darkred';
                    return '<span style="color:' + color + '">' + Ext.htmlEncode(v) + '</span>';
                } },
                { text: PS.gettext('Array volume'), dataIndex: 'volume', width: 160, renderer: function (v, m, r) {
                    return v ? Ext.htmlEncode(r.get('array') + ': ' + v) : '';
                } },
                { text: PS.gettext('Serial'), dataIndex: 'serial', width: 200 },
                { text: PS.gettext('Reason'), dataIndex: 'reason', flex: 1, renderer: Ext.htmlEncode }
            ];
            me.tbar = [{ text: PS.gettext('Refresh'), handler: function () { me.reload(true); } }];
            me.callParent();
            me.reload(false);
        },
        reload: function (fresh) {
            var me = this;
            PS.request({ url: PS.url('/storages'), params: fresh ? { refresh: 1 } : {}, success: function (d) { me.store.loadData(d || []); } });
        }
    });

    // The tree: VM incarnations -> restore points -> disks (their snapshots).
    Ext.define('PVESnap.VMTree', {
        extend: 'Ext.tree.Panel',
        alias: 'widget.pvesnapVMTree',
        title: PS.gettext('VMs and restore points'),
        rootVisible: false,
        useArrows: true,
        // vmid: show one VM only (the per-VM tab)
        initComponent: function () {
            var me = this;
            me.store = Ext.create('Ext.data.TreeStore', {
                fields: ['pointsLoaded', 'text', 'kind', 'vmid', 'ctime', 'state', 'created', 'point', 'pgroup', 'predates', 'missing', 'marker', 'snapshot', 'deleted'],
                root: { expanded: false, children: [] }
            });
            me.columns = [
                { xtype: 'treecolumn', text: PS.gettext('VM / restore point / disk'), dataIndex: 'text', flex: 2 },
                { text: PS.gettext('Taken / created'), dataIndex: 'created', width: 160, renderer: PS.fmtTime },
                { text: PS.gettext('Notes'), dataIndex: 'marker', flex: 2, renderer: function (v, meta, r) {
                    if (!v) { return ''; }
                    var color = r.get('kind') === 'vm' && r.get('state') === 'deleted' ? 'gray' : 'darkred';
                    return '<span class="pvesnap-marker" style="color:' + color + '">' + Ext.htmlEncode(v) + '</span>';
                } }
            ];
            me.tbar = [
                { text: PS.gettext('Refresh'), itemId: 'refresh', handler: function () { me.reload(true); } },
                { text: PS.gettext('Snapshot now'), itemId: 'snapshot', disabled: true, handler: function () { me.snapshotNow(); } },
                { text: PS.gettext('Restore'), itemId: 'restore', disabled: true, handler: function () { me.restore(); } }
            ];
            me.callParent();
            me.on('selectionchange', me.updateButtons, me);
            me.on('beforeitemexpand', function (node) {
                if (node.get('kind') === 'vm' && !node.get('pointsLoaded')) {
                    me.loadPoints(node);
                }
            });
            me.reload(false);
        },
        reload: function (refresh) {
            var me = this;
            me.setLoading(true);
            PS.request({
                url: PS.url('/vms'),
                params: refresh ? { refresh: 1 } : {},
                success: function (vms) {
                    me.setLoading(false);
                    var root = me.getRootNode();
                    root.removeAll();
                    Ext.Array.each(vms || [], function (v) {
                        if (me.vmid && v.vmid !== me.vmid) { return; }
                        var notes = [];
                        if (v.state === 'deleted') { notes.push(PS.gettext('deleted') + ' ' + PS.fmtTime(v.deleted * 1000)); }
                        if (v.problems) { notes = notes.concat(v.problems); }
                        root.appendChild({
                            text: v.vmid + (v.name ? ' (' + v.name + ')' : ''), kind: 'vm', vmid: v.vmid, ctime: v.ctime, state: v.state,
                            created: v.ctime * 1000, marker: notes.join('; '), leaf: false, expanded: false,
                            iconCls: v.state === 'deleted' ? 'x-fa fa-trash-o' : 'x-fa fa-desktop',
                            children: []
                        });
                    });
                    me.fireEvent('pvesnapLoaded', me);
                },
                failure: function (msg) { me.setLoading(false); PS.alert(msg); }
            });
        },
        loadPoints: function (node, then) {
            var me = this;
            PS.request({
                url: PS.url('/vms/' + node.get('vmid')),
                params: { ctime: node.get('ctime') },
                success: function (d) {
                    node.set('pointsLoaded', true);
                    node.removeAll();
                    Ext.Array.each(d.points || [], function (p) {
                        var notes = [];
                        if (p.predates_disk) { notes.push(PS.gettext('predates disk') + ' ' + p.predates_disk.join(', ')); }
                        if (p.missing) { notes.push(PS.gettext('no snapshot of') + ' ' + p.missing.join(', ')); }
                        var disks = [];
                        Ext.Object.each(p.snapshots, function (key, snap) {
                            disks.push({ text: key + ': ' + snap, kind: 'disk', snapshot: snap, leaf: true, iconCls: 'x-fa fa-hdd-o',
                                marker: p.predates_disk && Ext.Array.contains(p.predates_disk, key) ? PS.gettext('taken before this disk existed') : '' });
                        });
                        node.appendChild({
                            text: p.id, kind: 'point', point: p.id, pgroup: p.pgroup, created: p.created, vmid: node.get('vmid'),
                            ctime: node.get('ctime'), state: node.get('state'), predates: p.predates_disk || [], missing: p.missing || [],
                            marker: notes.join('; '), leaf: false, iconCls: 'x-fa fa-camera', children: disks
                        });
                    });
                    if (then) { then(); }
                    me.fireEvent('pvesnapPointsLoaded', me, node);
                },
                failure: function (msg) { PS.alert(msg); }
            });
        },
        updateButtons: function () {
            var me = this;
            var n = me.getSelection()[0];
            var snap = me.down('#snapshot'), rest = me.down('#restore');
            snap.setDisabled(!n || n.get('kind') !== 'vm' || n.get('state') !== 'live');
            var point = n && (n.get('kind') === 'point' ? n : (n.get('kind') === 'disk' ? n.parentNode : null));
            var predates = point && point.get('predates').length > 0;
            rest.setDisabled(!point || predates);
            var tip = predates ? Ext.String.format(PS.gettext('This snapshot was taken before disk {0} was created: it cannot contain it.'),
                point.get('predates').join(', ')) : '';
            rest.setTooltip(tip);
            rest.pvesnapTooltip = tip;
        },
        selectedPoint: function () {
            var n = this.getSelection()[0];
            return n && (n.get('kind') === 'point' ? n : n.parentNode);
        },
        snapshotNow: function () {
            var me = this;
            var n = me.getSelection()[0];
            PS.request({
                url: PS.url('/vms/' + n.get('vmid') + '/snapshot'),
                method: 'POST',
                success: function (upid) {
                    PS.showTask(upid, function () {
                        n.set('pointsLoaded', false);
                        me.loadPoints(n);
                    });
                }
            });
        },
        restore: function () {
            var me = this;
            var p = me.selectedPoint();
            Ext.create('PVESnap.RestoreWindow', { vmid: p.get('vmid'), ctime: p.get('ctime'), point: p.get('point'), deleted: p.get('state') === 'deleted',
                onStarted: function (upid) { PS.showTask(upid, function () { me.reload(false); }); } }).show();
        }
    });

    Ext.define('PVESnap.RestoreWindow', {
        extend: 'Ext.window.Window',
        alias: 'widget.pvesnapRestore',
        width: 520,
        modal: true,
        layout: 'fit',
        initComponent: function () {
            var me = this;
            me.title = Ext.String.format(PS.gettext('Restore VM {0} from {1}'), me.vmid, me.point);
            me.items = [{
                xtype: 'form',
                bodyPadding: 10,
                defaults: { anchor: '100%', labelWidth: 160 },
                items: [
                    { xtype: 'radiogroup', fieldLabel: PS.gettext('Restore as'), itemId: 'mode', columns: 1, items: [
                        { boxLabel: PS.gettext('a new VM'), name: 'mode', inputValue: 'new', checked: true },
                        { boxLabel: PS.gettext('this VM, replacing its disks'), name: 'mode', inputValue: 'overwrite', disabled: me.deleted }
                    ], listeners: { change: function (g, v) { me.modeChanged(v.mode); } } },
                    { xtype: 'numberfield', name: 'newid', fieldLabel: PS.gettext('New VM ID'), minValue: 100, maxValue: 999999999, emptyText: PS.gettext('next free') },
                    { xtype: 'textfield', name: 'name', fieldLabel: PS.gettext('Name'), emptyText: PS.gettext('as the source') },
                    { xtype: 'textfield', name: 'storage', fieldLabel: PS.gettext('Target storage'), emptyText: PS.gettext('the disks\' storages') },
                    { xtype: 'textfield', name: 'disks', fieldLabel: PS.gettext('Disks'), emptyText: PS.gettext('all on the array') },
                    { xtype: 'checkbox', name: 'preserve-macs', fieldLabel: PS.gettext('Keep MAC addresses'), inputValue: 1 },
                    { xtype: 'checkbox', name: 'link-down', fieldLabel: PS.gettext('Disconnect NICs'), inputValue: 1 },
                    { xtype: 'checkbox', name: 'start', fieldLabel: PS.gettext('Start after restore'), inputValue: 1 },
                    { xtype: 'checkbox', name: 'force-host-copy', fieldLabel: PS.gettext('Copy through the host'), inputValue: 1 },
                    { xtype: 'checkbox', name: 'safety-snapshot', fieldLabel: PS.gettext('Safety snapshot first'), inputValue: 1, checked: true, disabled: true }
                ]
            }];
            me.buttons = [{
                text: PS.gettext('Restore'),
                itemId: 'submit',
                handler: function () { me.submit(); }
            }];
            me.callParent();
        },
        modeChanged: function (mode) {
            var me = this, form = me.down('form');
            var isNew = mode === 'new';
            Ext.Array.each(['newid', 'name', 'storage', 'preserve-macs'], function (n) { form.down('[name=' + n + ']').setDisabled(!isNew); });
            form.down('[name=safety-snapshot]').setDisabled(isNew);
        },
        submit: function () {
            var me = this;
            var v = me.down('form').getForm().getValues();
            var params = { vmid: me.vmid, ctime: me.ctime, point: me.point };
            Ext.Object.each(v, function (k, val) {
                if (val !== '' && val !== null && val !== undefined) { params[k] = val; }
            });
            if (params.mode === 'overwrite' && !params['safety-snapshot']) { params['safety-snapshot'] = 0; }
            me.setLoading(true);
            PS.request({
                url: PS.url('/restore'),
                method: 'POST',
                params: params,
                success: function (upid) { me.close(); if (me.onStarted) { me.onStarted(upid); } },
                failure: function (msg) { me.setLoading(false); PS.alert(msg); }
            });
        }
    });

    // The Datacenter section.
    Ext.define('PVESnap.Panel', {
        extend: 'Ext.tab.Panel',
        alias: 'widget.pvesnapPanel',
        initComponent: function () {
            this.items = [{ xtype: 'pvesnapVMTree' }, { xtype: 'pvesnapArrays' }, { xtype: 'pvesnapStorages' }];
            this.callParent();
        }
    });

    // The VM's own tab: its restore points.
    Ext.define('PVESnap.VMPanel', {
        extend: 'PVESnap.VMTree',
        alias: 'widget.pvesnapVMPanel',
        initComponent: function () {
            var me = this;
            if (me.pveSelNode && me.pveSelNode.data) {
                me.vmid = parseInt(me.pveSelNode.data.vmid, 10);
            }
            me.title = undefined;
            me.callParent();
            me.on('pvesnapLoaded', function () {
                var vm = me.getRootNode().firstChild;
                if (vm) { vm.expand(); }
            });
        }
    });

    // Integration with the stock GUI, where its classes exist.
    if (window.PVE && PVE.dc && PVE.dc.Config) {
        Ext.define('PVESnap.override.DcConfig', {
            override: 'PVE.dc.Config',
            initComponent: function () {
                this.callParent(arguments);
                if (this.insertNodes) {
                    this.insertNodes([{ xtype: 'pvesnapPanel', title: 'Pure Storage', itemId: 'pvesnap', iconCls: 'fa fa-database' }]);
                }
            }
        });
    }
    if (window.PVE && PVE.qemu && PVE.qemu.Config) {
        Ext.define('PVESnap.override.QemuConfig', {
            override: 'PVE.qemu.Config',
            initComponent: function () {
                this.callParent(arguments);
                if (this.insertNodes) {
                    this.insertNodes([{ xtype: 'pvesnapVMPanel', title: PS.gettext('Array snapshots'), itemId: 'pvesnap', iconCls: 'fa fa-camera' }]);
                }
            }
        });
    }
    if (window.Proxmox && Proxmox.Utils && Proxmox.Utils.override_task_descriptions) {
        Proxmox.Utils.override_task_descriptions({
            pvesnaprestore: ['VM', PS.gettext('Restore from array snapshot')],
            pvesnapsnap: ['VM', PS.gettext('Array snapshot')]
        });
    }
    PS.loaded = true;
}());
