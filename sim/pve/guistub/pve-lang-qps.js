/*
 * A pseudo-locale for tests ("qps", as pseudo-localisation is usually named): loaded the way
 * pveproxy loads /pve2/locale/pve-lang-<lang>.js for the PVELangCookie language, it marks
 * every string that goes through gettext with an invisible U+2063 at its start and records
 * it in window.gettextSeen, so a test can find the words on screen that did not.
 */
var gettextSeen = {};
function qpsMark(message) { gettextSeen[message] = true; return '\u2063' + message; }
function gettext(message) { return qpsMark(message); }
function ngettext(singular, plural, count) { return qpsMark(count === 1 ? singular : plural); }
function pgettext(context, message) { return qpsMark(message); }
function npgettext(context, singular, plural, count) { return qpsMark(count === 1 ? singular : plural); }
