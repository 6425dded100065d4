/*
 * Stand-in for pve-manager's pvemanagerlib.js, served at /pve2/js/pvemanagerlib.js by the
 * simulated pveproxy: a reading of the stock GUI's behaviour, only as far as a panel added
 * to it depends on it, with the same rules.
 *
 * - The workspace renews the ticket at start (POST /access/ticket with the ticket as
 *   password) and keeps the answer's "cap" as the GuiCap state; views read it to show or
 *   hide what the user may do.
 * - Selecting a resource creates its config panel afresh (PVE.dc.Config, PVE.qemu.Config).
 * - PVE.panel.Config builds its menu from its items in initComponent, then selects the entry
 *   saved under hstateid ('dctab', 'kvmtab') if that entry exists, else the first one; each
 *   selection saves the entry again ('' for the first). Entries inserted after that moment
 *   are not selectable by the saved state: the first entry is selected and saved instead.
 * - Views are created when their entry is selected (savedItems), not before.
 * - PVE.form.StorageSelector lists GET /nodes/{node}/storage?content=…;
 *   PVE.form.GuestIDSelector checks an ID with GET /cluster/nextid?vmid=… (an error: in use).
 */
Ext.ns('PVE');

Ext.define('PVE.Utils', {
    singleton: true,
    getFormattedGuestIdentifier: function (vmid, name) {
        return name ? vmid + ' (' + name + ')' : vmid;
    },
    formatGuestTaskConfirmation: function (type, vmid, name) {
        return Ext.htmlEncode(Proxmox.Utils.format_task_description(type, PVE.Utils.getFormattedGuestIdentifier(vmid, name)));
    },
});

// The state provider: GuiCap defaults to no capability at all.
Ext.define('PVE.StateProvider', {
    extend: 'Ext.state.LocalStorageProvider',
    prefix: 'pvesim-',
    get: function (name, def) {
        var v = this.callParent(arguments);
        if (!v && name === 'GuiCap') {
            v = { vms: {}, storage: {}, access: {}, nodes: {}, dc: {}, sdn: {}, mapping: {} };
        }
        return v;
    },
});

Ext.define('PVE.panel.Config', {
    extend: 'Ext.panel.Panel',
    alias: 'widget.pvePanelConfig',
    layout: 'card',
    border: 0,
    firstItem: '',

    selectById: function (cardid) {
        var node = this.store.getRoot().findChild('id', cardid, true);
        if (node) {
            this.down('#menu').setSelection(node);
            return cardid;
        }
        return '';
    },

    activateCard: function (cardid) {
        var me = this;
        if (!me.savedItems[cardid]) {
            return;
        }
        var cur = me.getLayout().getActiveItem();
        me.add(me.savedItems[cardid]);
        if (cur) {
            me.setActiveItem(cardid);
            me.remove(cur, true);
            if (me.hstateid) {
                me.sp.set(me.hstateid, { value: cardid === me.firstItem ? '' : cardid });
            }
        }
    },

    initComponent: function () {
        var me = this;
        me.sp = Ext.state.Manager.getProvider();
        var active;
        if (me.hstateid) {
            var st = me.sp.get(me.hstateid);
            if (st && st.value) {
                active = st.value;
            }
        }
        var title = me.title || me.pveSelNode.data.text;
        me.title = undefined;
        me.dockedItems = [{
            xtype: 'toolbar', dock: 'left', padding: 0,
            items: [{
                xtype: 'treelist', itemId: 'menu', width: 190, expanderOnly: true,
                listeners: {
                    selectionchange: function (list, sel) {
                        if (sel) {
                            me.activateCard(sel.data.id);
                        }
                    },
                },
            }],
        }, {
            xtype: 'toolbar', dock: 'top', height: 36,
            items: [{ xtype: 'tbtext', text: title, baseCls: 'x-panel-header-text' }, '->'].concat(me.tbar || []),
        }];
        me.tbar = undefined;
        me.items = me.items || [];
        me.savedItems = {};
        if (me.items[0]) {
            me.firstItem = me.items[0].itemId;
        }
        me.store = Ext.create('Ext.data.TreeStore', { root: { expanded: true } });
        me.insertNodes(me.items);
        delete me.items;
        me.defaults = Ext.apply(me.defaults || {}, { pveSelNode: me.pveSelNode, border: 0 });
        me.callParent();
        var menu = me.down('#menu');
        var root = me.store.getRoot();
        var sel = root.findChild('id', active, true) || root.firstChild;
        menu.setStore(me.store);
        menu.setSelection(sel);
    },

    insertNodes: function (items) {
        var me = this;
        var root = me.store.getRoot();
        Ext.Array.each(items, function (item) {
            if (me.savedItems[item.itemId] !== undefined) {
                throw 'itemId already exists, please use another';
            }
            item.header = false;
            me.savedItems[item.itemId] = item;
            var parent = root;
            Ext.Array.each(item.groups || [], function (g) {
                parent = parent.findChild('id', g) || parent;
            });
            parent.appendChild({ id: item.itemId, text: item.title, iconCls: item.iconCls, leaf: true });
        });
    },
});

// A stock view the stand-in does not model: a panel with its name.
Ext.define('PVE.sim.StockView', {
    extend: 'Ext.panel.Panel',
    alias: 'widget.pveSimStockView',
    bodyPadding: 10,
    initComponent: function () {
        this.html = Ext.htmlEncode(this.stockName || '');
        this.callParent();
    },
});

Ext.define('PVE.dc.Config', {
    extend: 'PVE.panel.Config',
    alias: 'widget.PVE.dc.Config',
    initComponent: function () {
        var me = this;
        var caps = Ext.state.Manager.get('GuiCap');
        var view = function (title, itemId, icon) {
            return { xtype: 'pveSimStockView', stockName: title, title: title, itemId: itemId, iconCls: 'fa fa-' + icon };
        };
        me.title = gettext('Datacenter');
        me.hstateid = 'dctab';
        me.items = [view(gettext('Search'), 'search', 'search')];
        if (caps.dc['Sys.Audit']) {
            me.items.push(view(gettext('Summary'), 'summary', 'book'), view(gettext('Options'), 'options', 'gear'));
        }
        if (caps.storage['Datastore.Allocate'] || caps.dc['Sys.Audit']) {
            me.items.push(view(gettext('Storage'), 'storage', 'database'));
        }
        if (caps.dc['Sys.Audit']) {
            me.items.push(view(gettext('Backup'), 'backup', 'floppy-o'), view(gettext('Permissions'), 'permissions', 'unlock'));
        }
        me.items.push(view(gettext('Users'), 'users', 'user'));
        me.callParent();
    },
});

Ext.define('PVE.qemu.Config', {
    extend: 'PVE.panel.Config',
    alias: 'widget.PVE.qemu.Config',
    initComponent: function () {
        var me = this;
        var vm = me.pveSelNode.data;
        if (!vm.node) {
            throw 'no node name specified';
        }
        if (!vm.vmid) {
            throw 'no VM ID specified';
        }
        var caps = Ext.state.Manager.get('GuiCap');
        var view = function (title, itemId, icon) {
            return { xtype: 'pveSimStockView', stockName: title, title: title, itemId: itemId, iconCls: 'fa fa-' + icon };
        };
        me.title = Ext.htmlEncode(Ext.String.format(gettext("Virtual Machine {0} on node '{1}'"), vm.vmid + ' (' + vm.name + ')', vm.node));
        me.hstateid = 'kvmtab';
        me.items = [view(gettext('Summary'), 'summary', 'book'), view(gettext('Hardware'), 'hardware', 'desktop'),
            view(gettext('Options'), 'options', 'gear'), view(gettext('Task History'), 'tasks', 'list-alt')];
        if (caps.vms['VM.Backup']) {
            me.items.push(view(gettext('Backup'), 'backup', 'floppy-o'));
        }
        if (caps.vms['VM.Snapshot'] || caps.vms['VM.Snapshot.Rollback'] || caps.vms['VM.Audit']) {
            me.items.push(view(gettext('Snapshots'), 'snapshot', 'history'));
        }
        if (caps.vms['VM.Audit']) {
            me.items.push(view(gettext('Firewall'), 'firewall', 'shield'));
        }
        if (caps.vms['Permissions.Modify']) {
            me.items.push(view(gettext('Permissions'), 'permissions', 'unlock'));
        }
        me.callParent();
    },
});

Ext.define('PVE.form.StorageSelector', {
    extend: 'Ext.form.field.ComboBox',
    alias: 'widget.pveStorageSelector',
    allowBlank: false,
    valueField: 'storage',
    displayField: 'storage',
    queryMode: 'local',
    editable: false,
    reloadStorageList: function () {
        var me = this;
        if (!me.nodename) {
            return;
        }
        // The stock selector also sends format=1, which the simulated pveproxy does not
        // declare (yet): it would refuse the call.
        var params = {};
        if (me.storageContent) {
            params.content = me.storageContent;
        }
        me.store.setProxy({ type: 'proxmox', url: '/api2/json/nodes/' + me.nodename + '/storage', extraParams: params });
        me.store.load(function () { me.validate(); });
    },
    setNodename: function (nodename) {
        if (this.nodename === (nodename || '')) {
            return;
        }
        this.nodename = nodename || '';
        this.reloadStorageList();
    },
    initComponent: function () {
        var me = this;
        var nodename = me.nodename;
        me.nodename = undefined;
        me.store = Ext.create('Ext.data.Store', {
            fields: ['storage', 'active', 'type', 'avail', 'total', 'content', 'shared'],
            sorters: { property: 'storage', direction: 'ASC' },
        });
        me.callParent();
        me.setNodename(nodename);
    },
});

Ext.define('PVE.form.GuestIDSelector', {
    extend: 'Ext.form.field.Number',
    alias: 'widget.pveGuestIDSelector',
    allowBlank: false,
    minValue: 100,
    maxValue: 999999999,
    validateExists: undefined,
    loadNextFreeID: false,
    guestType: undefined,
    validator: function (value) {
        if (!Ext.isNumeric(value) || value < this.minValue || value > this.maxValue) {
            return true;
        }
        if (this.validateExists === true && !this.exists) {
            return this.unknownID;
        }
        if (this.validateExists === false && this.exists) {
            return this.inUseID;
        }
        return true;
    },
    initComponent: function () {
        var me = this;
        var type = me.guestType === 'qemu' ? 'VM' : me.guestType === 'lxc' ? 'CT' : 'CT/VM';
        me.fieldLabel = Ext.String.format('{0} ID', type);
        me.unknownID = Ext.String.format(gettext('This {0} ID does not exist'), type);
        me.inUseID = Ext.String.format(gettext('This {0} ID is already in use'), type);
        me.listeners = {
            change: function (f, v) {
                if (!Ext.isDefined(me.validateExists)) {
                    return;
                }
                Proxmox.Utils.API2Request({
                    url: '/cluster/nextid', method: 'GET', params: { vmid: v },
                    success: function () { me.exists = false; me.validate(); },
                    failure: function () { me.exists = true; me.validate(); },
                });
            },
        };
        me.callParent();
        if (me.loadNextFreeID) {
            Proxmox.Utils.API2Request({
                url: '/cluster/nextid', method: 'GET',
                success: function (r) { me.setRawValue(r.result.data); },
            });
        }
    },
});

// The workspace: a resource tree (Datacenter and the cluster's VMs) and the selected
// resource's config panel.
Ext.define('PVE.StdWorkspace', {
    extend: 'Ext.container.Viewport',
    alias: 'widget.pveStdWorkspace',
    layout: 'border',

    selectById: function (id) {
        var tree = this.down('#resources');
        var node = tree.getStore().getNodeById(id);
        if (node) {
            tree.getSelectionModel().select(node);
        }
        return !!node;
    },

    setContent: function (cfg) {
        var view = this.down('#content');
        view.removeAll(true);
        view.add(cfg);
    },

    initComponent: function () {
        var me = this;
        Ext.state.Manager.setProvider(Ext.create('PVE.StateProvider'));
        Ext.tip.QuickTipManager.init();
        me.items = [{
            region: 'west', xtype: 'treepanel', itemId: 'resources', width: 220, split: true, rootVisible: true,
            title: gettext('Server View'),
            store: Ext.create('Ext.data.TreeStore', { root: { id: 'root', text: gettext('Datacenter'), expanded: true, children: [] } }),
            listeners: {
                selectionchange: function (sm, sel) {
                    if (!sel.length) {
                        return;
                    }
                    var n = sel[0];
                    me.setContent({ xtype: n.data.type === 'qemu' ? 'PVE.qemu.Config' : 'PVE.dc.Config', pveSelNode: n, workspace: me });
                },
            },
        }, { region: 'center', itemId: 'content', layout: 'fit', border: false }];
        me.callParent();
        Ext.Ajax.request({
            url: '/api2/json/access/ticket', method: 'POST',
            params: { username: Proxmox.UserName, password: Ext.util.Cookies.get(Proxmox.Setup.auth_cookie_name) },
            success: function (r) {
                var d = Ext.decode(r.responseText).data;
                Proxmox.CSRFPreventionToken = d.CSRFPreventionToken;
                Ext.state.Manager.set('GuiCap', d.cap);
                me.loadResources();
            },
            failure: function (r) {
                me.loadError = 'POST /access/ticket: ' + r.status + ' ' + r.statusText;
            },
        });
    },

    // As PVE's resource store, which reloads every few seconds: a load that fails is tried
    // again (and what failed is kept for a test's diagnosis).
    loadResources: function () {
        var me = this;
        Ext.Ajax.request({
            url: '/api2/json/cluster/resources', method: 'GET', params: { type: 'vm' },
            failure: function (r) {
                me.loadError = 'GET /cluster/resources: ' + r.status + ' ' + r.statusText;
                Ext.defer(me.loadResources, 3000, me);
            },
            success: function (r) {
                var root = me.down('#resources').getRootNode();
                Ext.Array.each(Ext.decode(r.responseText).data || [], function (v) {
                    if (v.type !== 'qemu') {
                        return;
                    }
                    root.appendChild({ id: v.id, type: 'qemu', vmid: v.vmid, node: v.node, name: v.name, leaf: true,
                        text: Ext.htmlEncode(v.vmid + ' (' + v.name + ')'), iconCls: 'fa fa-desktop' });
                });
                me.ready = true;
                me.fireEvent('pvesimready', me);
            },
        });
    },
});
