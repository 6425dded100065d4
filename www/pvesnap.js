/*
 * pvesnap panel for the Proxmox VE web UI: arrays, storage mapping, the VM -> restore point
 * -> disk tree, snapshot now, restore. Ext JS classic classes (Ext JS 6 and 7) and the stock
 * GUI's own components, helpers and rules (gettext, GuiCap, PVE.form.*, Proxmox.Utils).
 * No 'use strict': it breaks Ext's callParent().
 *
 * Loaded after pvemanagerlib.js, either injected by pvesnap into the GUI page it passes
 * through on :8009 (same origin) or by pvehook into pveproxy's page on :8006 (then the calls
 * to pvesnap's own API go to :8009 with CORS, the user's ticket cookie and CSRF token; calls
 * to the stock API stay on the page's origin).
 *
 * Everything that came from an answer is HTML-encoded where Ext renders HTML (cells, tree
 * text, titles, messages, masks, toolbar texts, tooltips).
 */
(function () {
    var PS = window.PVESnap = window.PVESnap || {};
    var enc = Ext.htmlEncode;

    // Loaded from /pvesnap/ui/, the page came through pvesnap: the API is on the same origin.
    // Loaded from /pve2/js/ (pvehook on :8006), the API is on pvesnap's port (PS.apiPort).
    var src = (document.currentScript && document.currentScript.src) || '';
    PS.servedByPvesnap = src.indexOf('/pvesnap/ui/') >= 0;
    PS.apiPort = PS.apiPort || 8009;

    PS.sameOrigin = function () {
        return PS.servedByPvesnap || window.location.port === String(PS.apiPort);
    };

    // apiOrigin is where pvesnap answers, as this browser reaches it.
    PS.apiOrigin = function () {
        return PS.sameOrigin() ? window.location.origin : 'https://' + window.location.hostname + ':' + PS.apiPort;
    };

    PS.node = function () {
        return Proxmox.NodeName;
    };

    PS.url = function (path) {
        return '/nodes/' + encodeURIComponent(PS.node()) + '/pvesnap' + path;
    };

    PS.caps = function () {
        return Ext.state.Manager.get('GuiCap');
    };

    PS.fmtTime = function (ms) {
        return ms ? Ext.Date.format(new Date(ms), 'Y-m-d H:i:s') : '-';
    };

    // guestText is how the stock GUI names a guest ("100 (web)").
    PS.guestText = function (vmid, name) {
        return String(PVE.Utils.getFormattedGuestIdentifier(vmid, name));
    };

    PS.icon = function (name) {
        return 'fa fa-fw fa-' + name + ' x-fa-tree';
    };

    // reasonHtml is a disabled action's reason, shown next to it (a disabled button shows no
    // tooltip: the theme gives disabled items pointer-events: none).
    PS.reasonHtml = function (text) {
        return text ? '<i class="fa fa-fw fa-info-circle"></i> ' + enc(text) : '';
    };

    PS.permissionText = function (path, privs) {
        return gettext('Permission check failed') + ' (' + path + ', ' + privs.join(', ') + ')';
    };

    // checkHint says how to look at the daemon on the node.
    PS.checkHint = function () {
        return enc(gettext('Check the daemon on the node:')) + ' <code>systemctl status pvesnap</code>, <code>journalctl -u pvesnap</code>';
    };

    PS.link = function (href) {
        return '<a href="' + enc(href) + '" target="_blank" rel="noopener noreferrer">' + enc(href) + '</a>';
    };

    // answerHtml is the message of an answer that came back: PVE's message and status (as the
    // toolkit's extractRequestError) and the per-parameter errors.
    PS.answerHtml = function (resp) {
        var d = Ext.decode(resp.responseText, true) || {};
        var msg = (d.message || resp.statusText || gettext('Unknown error')).replace(/\s+$/, '');
        var html = enc(msg) + ' (' + resp.status + ')';
        if (Ext.isObject(d.errors)) {
            html += '<br>';
            Ext.Object.each(d.errors, function (k, v) {
                html += '<br><b>' + enc(k) + '</b>: ' + enc(v);
            });
        }
        return html;
    };

    // failure turns a failed call into HTML that says what went wrong and what to do, and
    // hands it to done(html, status). Without an answer (status 0) the browser does not say
    // why; on the page pvesnap serves, pvesnap is the server that went away. From the :8006
    // page a request without credentials tells apart a daemon that answers but refuses this
    // page's origin from one this browser cannot reach: not running, port blocked, or a
    // certificate this browser does not trust for that port yet (certificate exceptions are
    // kept per host and port).
    PS.failure = function (resp, done) {
        if (resp.status) {
            done(PS.answerHtml(resp), resp.status);
            return;
        }
        var conn = gettext('Connection error');
        if (resp.timedout) {
            done(enc(conn + ' - Timeout.') + '<br>' + PS.checkHint(), 0);
            return;
        }
        if (resp.aborted) {
            done(enc(conn + ' - aborted.'), 0);
            return;
        }
        if (PS.sameOrigin()) {
            done(enc(conn + ' - server offline?') + '<br>' + PS.checkHint(), 0);
            return;
        }
        var origin = PS.apiOrigin();
        var unreachable = function () {
            done(enc(conn + ' - server offline?') + '<br>' +
                Ext.String.format(enc(gettext('This page cannot reach pvesnap on {0}.')), PS.link(origin + '/')) + '<br>' +
                enc(gettext('If this browser does not trust its certificate yet, open that address once, accept the certificate, then reload this page.')) +
                '<br>' + PS.checkHint(), 0);
        };
        var refused = function () {
            done(Ext.String.format(enc(gettext('pvesnap on {0} answers, but does not accept calls from this page ({1}).')), PS.link(origin + '/'),
                enc(window.location.origin)) + '<br>' +
                Ext.String.format(enc(gettext('Open the GUI on {0}, or add {1} to cors_origins in /etc/pvesnap/pvesnap.yaml.')), PS.link(origin + '/'),
                '<code>' + enc(window.location.origin) + '</code>'), 0);
        };
        if (!window.fetch) {
            unreachable();
            return;
        }
        window.fetch(origin + '/pvesnap/ui/pvesnap.js?probe=' + Date.now(), { mode: 'no-cors', credentials: 'omit', cache: 'no-store' })
            .then(refused, unreachable);
    };

    // request calls the pvesnap API: opts.url below /api2/json, opts.method, opts.params;
    // opts.success(data), opts.failure(html, status) (default: an error dialog).
    PS.request = function (opts) {
        var cross = !PS.sameOrigin();
        Ext.Ajax.request({
            url: (cross ? PS.apiOrigin() : '') + '/api2/json' + opts.url,
            method: opts.method || 'GET',
            params: opts.params, // the query for GET and DELETE, a form body otherwise
            headers: { CSRFPreventionToken: Proxmox.CSRFPreventionToken },
            withCredentials: cross,
            cors: cross,
            timeout: 120000,
            success: function (resp) {
                var d = Ext.decode(resp.responseText, true) || {};
                if (opts.success) {
                    opts.success(d.data);
                }
            },
            failure: function (resp) {
                PS.failure(resp, opts.failure || function (html) {
                    Ext.Msg.alert(gettext('Error'), html);
                });
            },
        });
    };

    // load fills a view from the API; a failure masks the view with what went wrong, as the
    // stock views do.
    PS.load = function (view, opts) {
        // A grid's or tree's error covers its rows, not its toolbar: Refresh stays usable.
        var target = view.getView ? view.getView() : view;
        if (view.rendered) {
            view.setLoading(true);
        }
        PS.request(Ext.apply({}, {
            success: function (d) {
                if (view.destroyed || view.isDestroyed) {
                    return;
                }
                view.setLoading(false);
                Proxmox.Utils.setErrorMask(target, false);
                opts.success(d);
            },
            failure: function (html) {
                if (view.destroyed || view.isDestroyed) {
                    return;
                }
                view.setLoading(false);
                view.pvesnapError = html;
                if (target.rendered) {
                    Proxmox.Utils.setErrorMask(target, html);
                } else {
                    target.on('afterrender', function () { Proxmox.Utils.setErrorMask(target, html); }, null, { single: true });
                }
            },
        }, opts));
    };

    // vmPrivs asks the stock API which privileges the user has on /vms/<vmid> (the answer
    // decides per VM what the GuiCap union over all VMs only suggests).
    PS.vmPrivs = function (vmid, done) {
        var path = '/vms/' + vmid;
        Proxmox.Utils.API2Request({
            url: '/access/permissions',
            params: { path: path },
            method: 'GET',
            success: function (r) {
                done((r.result.data || {})[path] || {});
            },
            failure: function () {
                done({});
            },
        });
    };

    // showTask follows a task: Proxmox's own task viewer when present, else a small window.
    PS.showTask = function (upid, onDone) {
        if (Proxmox.window && Proxmox.window.TaskViewer && !PS.ownTaskWindow) {
            var tv = Ext.create('Proxmox.window.TaskViewer', { upid: upid });
            if (onDone) {
                tv.on('destroy', onDone);
            }
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
        initComponent: function () {
            var me = this;
            me.title = gettext('Task viewer');
            me.node = me.upid.split(':')[1];
            me.items = [{
                xtype: 'textarea',
                itemId: 'log',
                readOnly: true,
                fieldStyle: 'font-family: monospace; font-size: 12px;',
            }];
            me.bbar = [{ xtype: 'tbtext', itemId: 'status', html: enc(gettext('running')) }];
            me.callParent();
            me.timer = window.setInterval(function () { me.poll(); }, 1000);
            me.on('destroy', function () { window.clearInterval(me.timer); });
            me.poll();
        },
        // poll reads the log and the status; a failure shows in the status bar (no dialog
        // every second), and polling goes on: the failure may pass.
        poll: function () {
            var me = this;
            var base = '/nodes/' + encodeURIComponent(me.node) + '/tasks/' + encodeURIComponent(me.upid);
            var failed = function (html) {
                if (!me.isDestroyed) {
                    me.down('#status').update(enc(gettext('Error')) + ': ' + html);
                }
            };
            PS.request({
                url: base + '/log',
                params: { limit: 5000 },
                success: function (lines) {
                    if (!me.isDestroyed && lines) {
                        me.down('#log').setValue(Ext.Array.map(lines, function (l) { return l.t; }).join('\n'));
                    }
                },
                failure: failed,
            });
            PS.request({
                url: base + '/status',
                failure: failed,
                success: function (st) {
                    if (me.isDestroyed || !st) {
                        return;
                    }
                    var text = st.status === 'stopped' ? gettext('stopped') + ': ' + st.exitstatus : gettext('running');
                    me.down('#status').update(enc(text));
                    me.taskStatus = st;
                    if (st.status === 'stopped') {
                        window.clearInterval(me.timer);
                        if (me.onDone) {
                            me.onDone(st);
                            me.onDone = null;
                        }
                    }
                },
            });
        },
    });

    var encRenderer = function (v) {
        return enc(v === undefined || v === null ? '' : String(v));
    };

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
            me.title = create ? gettext('Add') + ': ' + gettext('FlashArray') : gettext('Edit') + ': ' + enc(me.arrayId);
            me.items = [{
                xtype: 'form',
                bodyPadding: 10,
                defaults: { anchor: '100%', labelWidth: 130 },
                items: [
                    {
                        xtype: 'textfield', name: 'array', fieldLabel: gettext('ID'), allowBlank: false, disabled: !create, value: me.arrayId,
                        regex: /^[a-z][a-z0-9_.-]{0,38}[a-z0-9]$/,
                    },
                    {
                        xtype: 'textfield', name: 'endpoint', fieldLabel: gettext('Management address'), allowBlank: !create,
                        emptyText: 'https://array.example.com',
                    },
                    {
                        xtype: 'textfield', name: 'token', inputType: 'password', fieldLabel: gettext('API token'), allowBlank: !create,
                        emptyText: create ? '' : gettext('unchanged'),
                    },
                    { xtype: 'textfield', name: 'ca', fieldLabel: gettext('CA file'), emptyText: gettext('system CAs') },
                    { xtype: 'textfield', name: 'hostgroup', fieldLabel: gettext('Host group'), emptyText: gettext('match this node by initiator') },
                    { xtype: 'textfield', name: 'comment', fieldLabel: gettext('Comment') },
                ],
            }];
            me.buttons = [{
                text: create ? gettext('Add') : gettext('OK'),
                itemId: 'submit',
                handler: function () {
                    var form = me.down('form').getForm();
                    if (!form.isValid()) {
                        return;
                    }
                    var params = {};
                    Ext.Object.each(form.getValues(), function (k, val) {
                        if (val !== '') {
                            params[k] = val;
                        }
                    });
                    if (create) {
                        params.type = 'flasharray';
                    }
                    me.setLoading(true);
                    PS.request({
                        url: create ? '/cluster/pvesnap/arrays' : '/cluster/pvesnap/arrays/' + encodeURIComponent(me.arrayId),
                        method: create ? 'POST' : 'PUT',
                        params: params,
                        success: function () {
                            me.close();
                            if (me.onSaved) {
                                me.onSaved();
                            }
                        },
                        failure: function (html) {
                            me.setLoading(false);
                            Ext.Msg.alert(gettext('Error'), html);
                        },
                    });
                },
            }];
            me.callParent();
            if (!create) {
                PS.load(me, {
                    url: '/cluster/pvesnap/arrays/' + encodeURIComponent(me.arrayId),
                    success: function (d) { me.down('form').getForm().setValues(d); },
                });
            }
        },
    });

    Ext.define('PVESnap.ArrayGrid', {
        extend: 'Ext.grid.Panel',
        alias: 'widget.pvesnapArrays',
        initComponent: function () {
            var me = this;
            var caps = PS.caps();
            var modify = !!caps.dc['Sys.Modify'];
            me.title = gettext('Arrays');
            me.emptyText = enc(gettext('No array configured'));
            me.store = Ext.create('Ext.data.Store', { fields: ['array', 'type', 'endpoint', 'hostgroup', 'comment', 'disable'] });
            me.columns = [
                { text: gettext('ID'), dataIndex: 'array', width: 120, renderer: encRenderer },
                { text: gettext('Type'), dataIndex: 'type', width: 90, renderer: encRenderer },
                { text: gettext('Management address'), dataIndex: 'endpoint', flex: 1, renderer: encRenderer },
                { text: gettext('Host group'), dataIndex: 'hostgroup', width: 120, renderer: encRenderer },
                { text: gettext('Comment'), dataIndex: 'comment', flex: 1, renderer: encRenderer },
            ];
            var sel = function () { return me.getSelection()[0]; };
            me.tbar = [
                {
                    text: gettext('Add'), itemId: 'add', hidden: !modify, handler: function () {
                        Ext.create('PVESnap.ArrayEdit', { onSaved: function () { me.reload(); } }).show();
                    },
                },
                {
                    text: gettext('Edit'), itemId: 'edit', disabled: true, hidden: !modify, handler: function () {
                        Ext.create('PVESnap.ArrayEdit', { arrayId: sel().get('array'), onSaved: function () { me.reload(); } }).show();
                    },
                },
                { text: gettext('Test'), itemId: 'test', disabled: true, handler: function () { me.test(sel().get('array')); } },
                {
                    text: gettext('Remove'), itemId: 'remove', disabled: true, hidden: !modify, handler: function () {
                        var id = sel().get('array');
                        Ext.Msg.confirm(gettext('Confirm'),
                            Ext.String.format(enc(gettext('Are you sure you want to remove entry {0}')), "'" + enc(id) + "'") + '<br>' +
                            enc(gettext('Nothing on the array is touched.')),
                            function (b) {
                                if (b === 'yes') {
                                    PS.request({
                                        url: '/cluster/pvesnap/arrays/' + encodeURIComponent(id),
                                        method: 'DELETE',
                                        success: function () { me.reload(); },
                                    });
                                }
                            });
                    },
                },
            ];
            me.callParent();
            me.on('selectionchange', function (m, s) {
                Ext.Array.each(['edit', 'test', 'remove'], function (id) { me.down('#' + id).setDisabled(!s.length); });
            });
            me.on('afterrender', me.reload, me, { single: true });
        },
        reload: function () {
            var me = this;
            PS.load(me, { url: '/cluster/pvesnap/arrays', success: function (d) { me.store.loadData(d || []); } });
        },
        // test logs in to the array and says what pvesnap sees: an information, or a warning
        // when this node's volumes would have nowhere to connect.
        test: function (id) {
            var me = this;
            me.setLoading(true);
            PS.request({
                url: '/cluster/pvesnap/arrays/' + encodeURIComponent(id) + '/status',
                success: function (st) {
                    me.setLoading(false);
                    var lines = [Ext.String.format(gettext('{0} (Purity {1}, REST {2})'), st.array_name, st.purity, st.rest_version),
                        st.target ? gettext('Volumes connect to') + ' ' + st.target : st.target_error];
                    Ext.Msg.show({
                        title: gettext('Test') + ': ' + enc(id),
                        icon: st.target ? Ext.Msg.INFO : Ext.Msg.WARNING,
                        buttons: Ext.Msg.OK,
                        message: Ext.Array.map(lines, enc).join('<br>'),
                    });
                },
                failure: function (html) {
                    me.setLoading(false);
                    Ext.Msg.alert(gettext('Error'), html);
                },
            });
        },
    });

    Ext.define('PVESnap.StorageGrid', {
        extend: 'Ext.grid.Panel',
        alias: 'widget.pvesnapStorages',
        initComponent: function () {
            var me = this;
            me.title = gettext('Storage mapping');
            me.emptyText = enc(gettext('No LVM storage on this node'));
            me.store = Ext.create('Ext.data.Store', { fields: ['storage', 'vg', 'pvs', 'serial', 'identity', 'array', 'volume', 'state', 'reason'] });
            me.columns = [
                { text: gettext('Storage'), dataIndex: 'storage', width: 100, renderer: encRenderer },
                { text: gettext('Volume group'), dataIndex: 'vg', width: 100, renderer: encRenderer },
                {
                    // the toolkit's state colours (the dark theme has its own)
                    text: gettext('State'), dataIndex: 'state', width: 130, renderer: function (v) {
                        return '<span class="' + (v === 'mapped' ? 'good' : 'critical') + '">' + encRenderer(v) + '</span>';
                    },
                },
                {
                    text: gettext('Array volume'), dataIndex: 'volume', width: 160, renderer: function (v, m, r) {
                        return v ? enc(r.get('array') + ': ' + v) : '';
                    },
                },
                { text: gettext('Serial'), dataIndex: 'serial', flex: 1, minWidth: 120, renderer: encRenderer },
                { text: gettext('Reason'), dataIndex: 'reason', flex: 2, minWidth: 150, renderer: encRenderer },
            ];
            me.tbar = [{ text: gettext('Refresh'), handler: function () { me.reload(true); } }];
            me.callParent();
            me.on('afterrender', function () { me.reload(false); }, me, { single: true });
        },
        reload: function (fresh) {
            var me = this;
            PS.load(me, { url: PS.url('/storages'), params: fresh ? { refresh: 1 } : {}, success: function (d) { me.store.loadData(d || []); } });
        },
    });

    // The tree: VM incarnations -> restore points -> disks (their snapshots).
    Ext.define('PVESnap.VMTree', {
        extend: 'Ext.tree.Panel',
        alias: 'widget.pvesnapVMTree',
        rootVisible: false,
        useArrows: true,
        // vmid: show one VM only (the per-VM tab)
        initComponent: function () {
            var me = this;
            var caps = PS.caps();
            me.privs = {};
            if (!me.vmid) {
                me.title = gettext('VMs and restore points');
            }
            me.store = Ext.create('Ext.data.TreeStore', {
                fields: ['pointsLoaded', 'text', 'kind', 'vmid', 'name', 'ctime', 'state', 'created', 'point', 'pgroup', 'predates', 'missing',
                    'marker', 'snapshot', 'deleted', 'mappedDisks', 'diskList', 'snapshots', 'diskKey'],
                root: { expanded: false, children: [] },
            });
            me.columns = [
                { xtype: 'treecolumn', text: gettext('VM / restore point / disk'), dataIndex: 'text', flex: 2, renderer: encRenderer },
                { text: gettext('Taken / created'), dataIndex: 'created', width: 160, renderer: PS.fmtTime },
                {
                    text: gettext('Notes'), dataIndex: 'marker', flex: 2, renderer: function (v, meta, r) {
                        if (!v) {
                            return '';
                        }
                        var cls = r.get('kind') === 'vm' && r.get('state') === 'deleted' ? '' : ' critical';
                        return '<span class="pvesnap-marker' + cls + '">' + enc(v) + '</span>';
                    },
                },
            ];
            me.tbar = [
                { text: gettext('Refresh'), itemId: 'refresh', iconCls: 'fa fa-refresh', handler: function () { me.reload(true); } },
                { xtype: 'tbseparator', hidden: !caps.vms['VM.Snapshot'] && !caps.vms['VM.Allocate'] && !(caps.vms['VM.Config.Disk'] && caps.vms['VM.PowerMgmt']) },
                {
                    text: gettext('Snapshot now'), itemId: 'snapshot', iconCls: 'fa fa-camera', disabled: true,
                    hidden: !caps.vms['VM.Snapshot'], handler: function () { me.snapshotNow(); },
                },
                {
                    text: gettext('Restore'), itemId: 'restore', iconCls: 'fa fa-undo', disabled: true,
                    hidden: !caps.vms['VM.Allocate'] && !(caps.vms['VM.Config.Disk'] && caps.vms['VM.PowerMgmt']),
                    handler: function () { me.restore(); },
                },
                { xtype: 'tbtext', itemId: 'reason', html: '', flex: 1, style: 'white-space: normal;' },
            ];
            me.callParent();
            me.on('selectionchange', me.updateButtons, me);
            me.on('beforeitemexpand', function (node) {
                if (node.get('kind') === 'vm' && !node.get('pointsLoaded')) {
                    me.loadPoints(node);
                }
            });
            me.on('afterrender', function () { me.reload(false); }, me, { single: true });
        },
        reload: function (refresh) {
            var me = this;
            PS.load(me, {
                url: PS.url('/vms'),
                params: refresh ? { refresh: 1 } : {},
                success: function (vms) {
                    var root = me.getRootNode();
                    root.removeAll();
                    Ext.Array.each(vms || [], function (v) {
                        if (me.vmid && v.vmid !== me.vmid) {
                            return;
                        }
                        var notes = [];
                        if (v.state === 'deleted') {
                            notes.push(gettext('deleted') + ' ' + PS.fmtTime(v.deleted * 1000));
                        }
                        if (v.problems) {
                            notes = notes.concat(v.problems);
                        }
                        root.appendChild({
                            text: PS.guestText(v.vmid, v.name), kind: 'vm', vmid: v.vmid, name: v.name, ctime: v.ctime, state: v.state,
                            created: v.ctime * 1000, marker: notes.join('; '), mappedDisks: v.mapped_disks, leaf: false, expanded: false,
                            iconCls: PS.icon(v.state === 'deleted' ? 'trash-o' : 'desktop'), children: [],
                        });
                    });
                    me.updateButtons();
                    me.fireEvent('pvesnapLoaded', me);
                },
            });
        },
        loadPoints: function (node, then) {
            var me = this;
            PS.request({
                url: PS.url('/vms/' + node.get('vmid')),
                params: { ctime: node.get('ctime') },
                success: function (d) {
                    node.set('pointsLoaded', true);
                    node.set('diskList', d.disk_list || []);
                    node.removeAll();
                    Ext.Array.each(d.points || [], function (p) {
                        var notes = [];
                        if (p.predates_disk) {
                            notes.push(gettext('predates disk') + ' ' + p.predates_disk.join(', '));
                        }
                        if (p.missing) {
                            notes.push(gettext('no snapshot of') + ' ' + p.missing.join(', '));
                        }
                        var disks = [];
                        Ext.Object.each(p.snapshots, function (key, snap) {
                            disks.push({
                                text: key + ': ' + snap, kind: 'disk', diskKey: key, snapshot: snap, leaf: true, iconCls: PS.icon('hdd-o'),
                                marker: p.predates_disk && Ext.Array.contains(p.predates_disk, key) ? gettext('taken before this disk existed') : '',
                            });
                        });
                        node.appendChild({
                            text: p.id, kind: 'point', point: p.id, pgroup: p.pgroup, created: p.created, vmid: node.get('vmid'),
                            ctime: node.get('ctime'), state: node.get('state'), predates: p.predates_disk || [], missing: p.missing || [],
                            snapshots: p.snapshots || {}, marker: notes.join('; '), leaf: false, iconCls: PS.icon('history'), children: disks,
                        });
                    });
                    me.updateButtons();
                    if (then) {
                        then();
                    }
                    me.fireEvent('pvesnapPointsLoaded', me, node);
                },
            });
        },
        // vmNode is the VM of a selected VM, point or disk.
        vmNode: function (n) {
            while (n && n.get('kind') !== 'vm') {
                n = n.parentNode;
            }
            return n;
        },
        selectedPoint: function () {
            var n = this.getSelection()[0];
            if (!n || n.get('kind') === 'vm') {
                return null;
            }
            return n.get('kind') === 'point' ? n : n.parentNode;
        },
        // updateButtons enables what the selection and the user's privileges on its VM
        // allow, and says why an action is not possible.
        updateButtons: function () {
            var me = this;
            var n = me.getSelection()[0];
            var vm = me.vmNode(n);
            var snap = me.down('#snapshot'), rest = me.down('#restore');
            var reasons = [];
            if (!vm) {
                snap.setDisabled(true);
                rest.setDisabled(true);
                me.down('#reason').update('');
                return;
            }
            var vmid = vm.get('vmid');
            var privs = me.privs[vmid];
            if (!privs) {
                snap.setDisabled(true);
                rest.setDisabled(true);
                PS.vmPrivs(vmid, function (p) {
                    me.privs[vmid] = p;
                    if (!me.isDestroyed) {
                        me.updateButtons();
                    }
                });
                return;
            }
            var path = '/vms/' + vmid;
            var snapWhy = '';
            if (vm.get('state') !== 'live') {
                snapWhy = gettext('The VM was deleted.');
            } else if (!vm.get('mappedDisks')) {
                snapWhy = gettext('No disk of this VM is on an array volume.');
            } else if (!privs['VM.Snapshot']) {
                snapWhy = PS.permissionText(path, ['VM.Snapshot']);
            }
            snap.setDisabled(!!snapWhy);
            if (snapWhy && !snap.isHidden()) {
                reasons.push(gettext('Snapshot now') + ': ' + snapWhy);
            }
            var point = me.selectedPoint();
            var restWhy = '';
            if (point) {
                var inPlace = vm.get('state') === 'live' && privs['VM.Config.Disk'] && privs['VM.PowerMgmt'];
                if (point.get('predates').length) {
                    restWhy = Ext.String.format(gettext('This snapshot was taken before disk {0} was created: it cannot contain it.'),
                        point.get('predates').join(', '));
                } else if (!inPlace && !PS.caps().vms['VM.Allocate']) {
                    restWhy = vm.get('state') === 'live' ? PS.permissionText(path, ['VM.Config.Disk', 'VM.PowerMgmt'])
                        : PS.permissionText('/vms', ['VM.Allocate']);
                }
            }
            rest.setDisabled(!point || !!restWhy);
            if (restWhy && !rest.isHidden()) {
                reasons.push(gettext('Restore') + ': ' + restWhy);
            }
            me.down('#reason').update(Ext.Array.map(reasons, PS.reasonHtml).join('<br>'));
        },
        snapshotNow: function () {
            var me = this;
            var vm = me.vmNode(me.getSelection()[0]);
            PS.request({
                url: PS.url('/vms/' + vm.get('vmid') + '/snapshot'),
                method: 'POST',
                success: function (upid) {
                    PS.showTask(upid, function () {
                        vm.set('pointsLoaded', false);
                        me.loadPoints(vm, function () { vm.expand(); });
                    });
                },
            });
        },
        restore: function () {
            var me = this;
            var p = me.selectedPoint();
            var vm = me.vmNode(p);
            Ext.create('PVESnap.RestoreWindow', {
                vmid: vm.get('vmid'), vmname: vm.get('name'), ctime: vm.get('ctime'), point: p.get('point'), state: vm.get('state'),
                snapshots: p.get('snapshots'), diskList: vm.get('diskList') || [], privs: me.privs[vm.get('vmid')] || {},
                onStarted: function (upid) { PS.showTask(upid, function () { me.reload(false); }); },
            }).show();
        },
    });

    // The restore dialog, built like the stock restore and import dialogs: the target storage
    // and guest ID fields of the stock GUI, a per-disk grid, and the options pvesnap's restore
    // call has (no bandwidth limit: the copy is offloaded to the array; no HA: the call does
    // not add the VM to HA).
    Ext.define('PVESnap.RestoreWindow', {
        extend: 'Ext.window.Window',
        alias: 'widget.pvesnapRestore',
        width: 640,
        modal: true,
        resizable: false,
        layout: 'fit',
        initComponent: function () {
            var me = this;
            var caps = PS.caps();
            var guest = PS.guestText(me.vmid, me.vmname);
            me.canNew = !!caps.vms['VM.Allocate'];
            me.canInPlace = me.state === 'live' && !!me.privs['VM.Config.Disk'] && !!me.privs['VM.PowerMgmt'];
            var mode = me.canNew ? 'new' : 'overwrite';
            me.title = Ext.String.format(enc(gettext('Restore VM {0} from {1}')), enc(guest), enc(me.point));
            var inPlaceWhy = me.state !== 'live' ? gettext('The VM was deleted: it can only come back as a new VM.')
                : !me.canInPlace ? PS.permissionText('/vms/' + me.vmid, ['VM.Config.Disk', 'VM.PowerMgmt']) : '';
            var disks = [];
            Ext.Array.each(me.diskList, function (d) {
                if (me.snapshots[d.key] !== undefined) {
                    disks.push({ enable: true, key: d.key, volid: d.volid, size: d.size, source: d.storage, snapshot: me.snapshots[d.key], storage: '' });
                }
            });
            me.items = [{
                xtype: 'form',
                bodyPadding: 10,
                border: false,
                fieldDefaults: { labelWidth: 140, anchor: '100%' },
                items: [
                    { xtype: 'displayfield', fieldLabel: gettext('Source'), htmlEncode: true, value: guest + ', ' + me.point },
                    {
                        xtype: 'radiogroup', fieldLabel: gettext('Restore as'), itemId: 'mode', columns: 1,
                        items: [
                            { boxLabel: gettext('A new VM'), name: 'mode', inputValue: 'new', checked: mode === 'new', disabled: !me.canNew },
                            {
                                boxLabel: gettext('This VM, replacing its disks'), name: 'mode', inputValue: 'overwrite', checked: mode === 'overwrite',
                                disabled: !me.canInPlace,
                            },
                        ],
                        listeners: { change: function (g, v) { me.modeChanged(v.mode); } },
                    },
                    { xtype: 'displayfield', itemId: 'inPlaceWhy', hidden: !inPlaceWhy, value: PS.reasonHtml(inPlaceWhy) },
                    {
                        xtype: 'pveGuestIDSelector', name: 'newid', guestType: 'qemu', loadNextFreeID: true, validateExists: false,
                        isNewOnly: true,
                    },
                    {
                        // emptyText goes into the input's placeholder attribute unencoded
                        xtype: 'textfield', name: 'name', fieldLabel: gettext('Name'), emptyText: enc(me.vmname || ''), isNewOnly: true,
                        regex: /^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,61}[a-zA-Z0-9])?$/, regexText: gettext('This is not a valid DNS name'),
                    },
                    {
                        xtype: 'pveStorageSelector', name: 'storage', fieldLabel: gettext('Target storage'), nodename: PS.node(),
                        storageContent: 'images', allowBlank: true, autoSelect: false, emptyText: gettext('Source storage'), isNewOnly: true,
                        listeners: { afterrender: function (f) { PS.lvmOnly(f.getStore()); } },
                    },
                    {
                        xtype: 'grid', itemId: 'disks', anchor: '100%', minHeight: 60, maxHeight: 180, margin: '0 0 10 0',
                        store: { fields: ['enable', 'key', 'volid', 'size', 'source', 'snapshot', 'storage'], data: disks },
                        columns: [
                            { xtype: 'checkcolumn', header: gettext('Use'), dataIndex: 'enable', width: 50 },
                            { text: gettext('Disk'), dataIndex: 'key', width: 70, renderer: encRenderer },
                            { text: gettext('Source'), dataIndex: 'volid', flex: 1, renderer: encRenderer },
                            { text: gettext('Size'), dataIndex: 'size', width: 80, renderer: function (v) { return v ? enc(Proxmox.Utils.format_size(v)) : ''; } },
                            { text: gettext('Snapshot'), dataIndex: 'snapshot', flex: 1, renderer: encRenderer },
                            {
                                text: gettext('Storage'), dataIndex: 'storage', xtype: 'widgetcolumn', width: 150, itemId: 'diskStorage',
                                widget: {
                                    xtype: 'pveStorageSelector', isFormField: false, autoSelect: false, allowBlank: true, emptyText: gettext('From Default'),
                                    storageContent: 'images', nodename: PS.node(),
                                    listeners: {
                                        afterrender: function (f) { PS.lvmOnly(f.getStore()); },
                                        change: function (f, v) {
                                            var rec = f.getWidgetRecord && f.getWidgetRecord();
                                            if (rec) {
                                                rec.set('storage', v || '');
                                                rec.commit();
                                            }
                                        },
                                    },
                                },
                            },
                        ],
                    },
                    {
                        xtype: 'fieldcontainer', layout: 'hbox', fieldLabel: gettext('Options'), defaults: { flex: 1 },
                        items: [
                            {
                                xtype: 'checkbox', name: 'unique', boxLabel: gettext('Unique'), inputValue: 1, checked: true, isNewOnly: true,
                                autoEl: { tag: 'div', 'data-qtip': enc(gettext('Autogenerate unique properties, e.g., MAC addresses')) },
                            },
                            { xtype: 'checkbox', name: 'start', boxLabel: gettext('Start after restore'), inputValue: 1 },
                            {
                                xtype: 'checkbox', name: 'link-down', boxLabel: gettext('Disconnect NICs'), inputValue: 1,
                                autoEl: { tag: 'div', 'data-qtip': enc(gettext('Set link_down on every network device, so the restored VM starts off the network')) },
                            },
                        ],
                    },
                    {
                        xtype: 'fieldcontainer', layout: 'hbox', fieldLabel: ' ', labelSeparator: '', defaults: { flex: 1 },
                        items: [
                            { xtype: 'checkbox', name: 'force-host-copy', boxLabel: gettext('Copy through the host'), inputValue: 1 },
                            { xtype: 'checkbox', name: 'safety-snapshot', boxLabel: gettext('Safety snapshot first'), inputValue: 1, checked: true, isInPlaceOnly: true },
                            { xtype: 'component' },
                        ],
                    },
                ],
            }];
            me.buttons = [{ text: gettext('Restore'), itemId: 'submit', handler: function () { me.submit(); } }];
            me.callParent();
            me.down('form').on('validitychange', function (f, valid) { me.down('#submit').setDisabled(!valid); });
            me.modeChanged(mode);
        },
        modeChanged: function (mode) {
            var me = this;
            var isNew = mode === 'new';
            Ext.Array.each(me.query('[isNewOnly]'), function (f) { f.setDisabled(!isNew); });
            Ext.Array.each(me.query('[isInPlaceOnly]'), function (f) { f.setDisabled(isNew); });
            me.down('#disks').down('#diskStorage').setHidden(!isNew);
        },
        // params are the restore call's parameters from the form and the disk grid.
        params: function () {
            var me = this;
            var v = me.down('form').getForm().getValues();
            var isNew = v.mode === 'new';
            var p = { vmid: me.vmid, ctime: me.ctime, point: me.point, mode: v.mode };
            var keys = [], all = true, perDisk = [];
            me.down('#disks').getStore().each(function (r) {
                if (r.get('enable')) {
                    keys.push(r.get('key'));
                    if (isNew && r.get('storage')) {
                        perDisk.push(r.get('key') + ':' + r.get('storage'));
                    }
                } else {
                    all = false;
                }
            });
            if (!all) {
                p.disks = keys.join(',');
            }
            if (isNew) {
                Ext.Array.each(['newid', 'name', 'storage'], function (k) {
                    if (v[k] !== undefined && v[k] !== '') {
                        p[k] = v[k];
                    }
                });
                if (perDisk.length) {
                    p['disk-storage'] = perDisk.join(',');
                }
                if (!v.unique) {
                    p['preserve-macs'] = 1;
                }
            } else {
                p['safety-snapshot'] = v['safety-snapshot'] ? 1 : 0;
            }
            Ext.Array.each(['start', 'link-down', 'force-host-copy'], function (k) {
                if (v[k]) {
                    p[k] = 1;
                }
            });
            p.keys = keys;
            return p;
        },
        // confirmText is what an in-place restore will do, in the stock GUI's words first.
        confirmText: function (p) {
            var me = this;
            var what = [
                p['safety-snapshot'] ? gettext("A safety snapshot of the VM's array volumes is taken first and kept on the array.")
                    : gettext('No safety snapshot is taken: the current data cannot be recovered.'),
                Ext.String.format(gettext('The data of {0} is copied from {1}; then the VM is shut down and its disks are replaced.'),
                    p.keys.join(', '), me.point),
                p.start ? gettext('The VM is started afterwards.') : gettext('The VM stays stopped afterwards.'),
            ];
            return PVE.Utils.formatGuestTaskConfirmation('pvesnaprestore', me.vmid, me.vmname) + '. ' +
                enc(gettext('This will permanently erase current VM data.')) + '<br><br>' + Ext.Array.map(what, enc).join('<br>');
        },
        submit: function () {
            var me = this;
            var p = me.params();
            if (!p.keys.length) {
                Ext.Msg.alert(gettext('Error'), enc(gettext('Select at least one disk.')));
                return;
            }
            var run = function () {
                var params = Ext.apply({}, p);
                delete params.keys;
                me.setLoading(true);
                PS.request({
                    url: PS.url('/restore'),
                    method: 'POST',
                    params: params,
                    success: function (upid) {
                        me.close();
                        if (me.onStarted) {
                            me.onStarted(upid);
                        }
                    },
                    failure: function (html) {
                        me.setLoading(false);
                        Ext.Msg.alert(gettext('Error'), html);
                    },
                });
            };
            if (p.mode !== 'overwrite') {
                run();
                return;
            }
            Ext.Msg.confirm(gettext('Confirm'), me.confirmText(p), function (b) {
                if (b === 'yes') {
                    run();
                }
            });
        },
    });

    // lvmOnly keeps the storages a restore can write to: LVM (thick) storages enabled and
    // active on this node.
    PS.lvmOnly = function (store) {
        store.addFilter({
            id: 'pvesnapLvmOnly',
            filterFn: function (r) {
                return r.get('type') === 'lvm' && r.get('enabled') !== 0 && r.get('active') !== 0;
            },
        });
    };

    // The Datacenter entry: the VM tree, and the arrays and storage mapping for whom may see them.
    Ext.define('PVESnap.Panel', {
        extend: 'Ext.tab.Panel',
        alias: 'widget.pvesnapPanel',
        initComponent: function () {
            var caps = PS.caps();
            this.items = [{ xtype: 'pvesnapVMTree' }];
            if (caps.dc['Sys.Audit']) {
                this.items.push({ xtype: 'pvesnapArrays' });
            }
            if (caps.storage['Datastore.Audit']) {
                this.items.push({ xtype: 'pvesnapStorages' });
            }
            this.callParent();
        },
    });

    // The VM's own entry: its restore points.
    Ext.define('PVESnap.VMPanel', {
        extend: 'PVESnap.VMTree',
        alias: 'widget.pvesnapVMPanel',
        initComponent: function () {
            var me = this;
            me.vmid = parseInt(me.pveSelNode.data.vmid, 10);
            me.callParent();
            me.on('pvesnapLoaded', function () {
                var vm = me.getRootNode().firstChild;
                if (vm) {
                    vm.expand();
                    me.getSelectionModel().select(vm);
                }
            });
        },
    });

    // insertAfter puts item after the first of ids found in items, or at the end.
    PS.insertAfter = function (items, ids, item) {
        for (var i = 0; i < ids.length; i++) {
            for (var j = 0; j < items.length; j++) {
                if (items[j].itemId === ids[i]) {
                    items.splice(j + 1, 0, item);
                    return items;
                }
            }
        }
        items.push(item);
        return items;
    };

    // addEntry adds item to the menu of the stock config panel cls, after the first of the
    // entries after that exists, for users allowed(GuiCap). The entry joins the menu where the
    // stock entries are made (insertNodes, called from initComponent), so the entry saved for
    // the panel is found and selected again on the next visit, as a stock one is.
    PS.addEntry = function (cls, allowed, after, item) {
        Ext.define('PVESnap.override.' + cls.replace(/\./g, ''), {
            override: cls,
            insertNodes: function (items) {
                if (!this.pvesnapAdded) {
                    this.pvesnapAdded = true;
                    if (allowed(PS.caps())) {
                        PS.insertAfter(items, after, Ext.apply({}, item));
                    }
                }
                return this.callParent([items]);
            },
        });
    };
    PS.addEntry('PVE.dc.Config', function (caps) { return !!caps.dc['Sys.Audit']; }, ['storage'],
        { xtype: 'pvesnapPanel', title: gettext('Pure Storage'), itemId: 'pvesnap', iconCls: 'fa fa-database' });
    PS.addEntry('PVE.qemu.Config', function (caps) { return !!caps.vms['VM.Audit']; }, ['snapshot', 'backup', 'tasks'],
        { xtype: 'pvesnapVMPanel', title: gettext('Array snapshots'), itemId: 'pvesnap', iconCls: 'fa fa-camera' });
    Proxmox.Utils.override_task_descriptions({
        pvesnaprestore: ['VM', gettext('Restore from array snapshot')],
        pvesnapsnap: ['VM', gettext('Array snapshot')],
    });
    PS.loaded = true;
}());
