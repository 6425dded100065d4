/*
 * Stand-in for proxmox-widget-toolkit's proxmoxlib.js, served at /proxmoxlib.js by the
 * simulated pveproxy. It is a reading of the toolkit's documented behaviour, not its code:
 * only what a panel inside the PVE GUI relies on, with the same rules, so that a panel that
 * misuses them fails here as it would in the real GUI.
 *
 * - Every Ext.Ajax request carries the CSRF token (toolkit: a 'beforerequest' listener).
 * - Proxmox.Utils.API2Request prefixes /api2/extjs, masks waitMsgTarget, calls failure with
 *   response.htmlStatus (already HTML-encoded): "Connection error - server offline?" when
 *   there is no answer, the answer's message otherwise.
 * - Ext.Msg.alert always shows the ERROR icon (the toolkit overrides it so); an information
 *   dialog needs Ext.Msg.show with icon: Ext.Msg.INFO.
 * - setErrorMask masks a component with HTML (callers encode).
 */
Ext.Ajax.defaultHeaders = { Accept: 'application/json' };
Ext.Ajax.on('beforerequest', function (conn, options) {
    if (Proxmox.CSRFPreventionToken) {
        options.headers = options.headers || {};
        options.headers.CSRFPreventionToken = Proxmox.CSRFPreventionToken;
    }
});

Ext.define('Proxmox.Utils', {
    singleton: true,

    task_desc_table: {
        qmrestore: ['VM', gettext('Restore')],
        qmsnapshot: ['VM', gettext('Snapshot')],
    },

    override_task_descriptions: function (extra) {
        Ext.Object.each(extra, function (k, v) {
            Proxmox.Utils.task_desc_table[k] = v;
        });
    },

    format_task_description: function (type, id) {
        var d = Proxmox.Utils.task_desc_table[type];
        if (!d) {
            return id ? type + ' ' + id : type;
        }
        if (Ext.isFunction(d)) {
            return d(type, id);
        }
        return d[0] && id !== undefined ? d[0] + ' ' + id + ' - ' + d[1] : d[1];
    },

    format_size: function (size) {
        var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
        var i = 0;
        size = Number(size) || 0;
        while (size >= 1024 && i < units.length - 1) {
            size /= 1024;
            i++;
        }
        return (i === 0 ? size : size.toFixed(2)) + ' ' + units[i];
    },

    authOK: function () {
        return Proxmox.UserName !== '' && Ext.util.Cookies.get(Proxmox.Setup.auth_cookie_name);
    },

    setErrorMask: function (comp, msg) {
        var el = comp.el;
        if (!el) {
            return;
        }
        if (!msg) {
            el.unmask();
        } else if (msg === true) {
            el.mask(gettext('Loading...'));
        } else {
            el.mask(msg);
        }
    },

    extractRequestError: function (result, verbose) {
        var msg = gettext('Successful');
        if (!result.success) {
            msg = gettext('Unknown error');
            if (result.message) {
                msg = Ext.htmlEncode(result.message);
                if (result.status) {
                    msg += ' (' + result.status + ')';
                }
            }
            if (verbose && Ext.isObject(result.errors)) {
                msg += '<br>';
                Ext.Object.each(result.errors, function (p, d) {
                    msg += '<br><b>' + Ext.htmlEncode(p) + '</b>: ' + Ext.htmlEncode(d);
                });
            }
        }
        return msg;
    },

    API2Request: function (reqOpts) {
        var opts = Ext.apply({ waitMsg: gettext('Please wait...') }, reqOpts);
        var autoErrorAlert = typeof reqOpts.failure !== 'function' && typeof reqOpts.callback !== 'function';
        if (!opts.url.match(/^\/api2/)) {
            opts.url = '/api2/extjs' + opts.url;
        }
        delete opts.callback;
        var target = opts.waitMsgTarget;
        var unmask = function () {
            if (target) {
                target.setLoading(false);
            }
        };
        opts.success = function (response, options) {
            unmask();
            var result = Ext.decode(response.responseText);
            response.result = result;
            if (!result.success) {
                response.htmlStatus = Proxmox.Utils.extractRequestError(result, true);
                Ext.callback(reqOpts.callback, reqOpts.scope, [options, false, response]);
                Ext.callback(reqOpts.failure, reqOpts.scope, [response, options]);
                if (autoErrorAlert) {
                    Ext.Msg.alert(gettext('Error'), response.htmlStatus);
                }
                return;
            }
            Ext.callback(reqOpts.callback, reqOpts.scope, [options, true, response]);
            Ext.callback(reqOpts.success, reqOpts.scope, [response, options]);
        };
        opts.failure = function (response, options) {
            unmask();
            response.result = Ext.decode(response.responseText, true) || {};
            var msg = gettext('Connection error') + ' - server offline?';
            if (response.aborted) {
                msg = gettext('Connection error') + ' - aborted.';
            } else if (response.timedout) {
                msg = gettext('Connection error') + ' - Timeout.';
            } else if (response.status && response.statusText) {
                msg = gettext('Connection error') + ' ' + response.status + ': ' + response.statusText;
            }
            response.htmlStatus = Ext.htmlEncode(msg);
            Ext.callback(reqOpts.callback, reqOpts.scope, [options, false, response]);
            Ext.callback(reqOpts.failure, reqOpts.scope, [response, options]);
        };
        if (target) {
            target.setLoading(opts.waitMsg);
        }
        Ext.Ajax.request(opts);
    },
});

// Stores of the toolkit read PVE's envelope through this proxy ("data" is the root).
Ext.define('Proxmox.RestProxy', {
    extend: 'Ext.data.proxy.Rest',
    alias: 'proxy.proxmox',
    pageParam: null,
    startParam: null,
    limitParam: null,
    groupParam: null,
    sortParam: null,
    filterParam: null,
    noCache: false,
    constructor: function (config) {
        Ext.applyIf(config, { reader: { type: 'json', rootProperty: 'data' } });
        this.callParent([config]);
    },
});

// The toolkit's alert is always an error.
Ext.onReady(function () {
    Ext.override(Ext.Msg, {
        alert: function (title, message, fn, scope) {
            if (Ext.isString(title)) {
                return this.show({ title: title, message: message, icon: this.ERROR, buttons: this.OK, fn: fn, scope: scope });
            }
        },
    });
});
