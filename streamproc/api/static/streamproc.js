/* streamproc.js: events in, decisions into the page. No build step, no dependencies.
 *
 *   <script src="https://API/v1/streamproc.js" data-key="WRITE_KEY" defer></script>
 *   <div data-streamproc-slot="homepage_hero">the page's own content</div>
 *
 * Script attributes: data-key (a site's write key; none when the API is open), data-api (the
 * API's origin; default: where this file came from), data-timeout (ms a decide may take before
 * the page keeps its own content; default 1000), data-page-view="false" (no automatic page view).
 * The page describes itself on <body>: data-streamproc-page (home, category, product, search,
 * cart, checkout, content, account, other), data-streamproc-category, data-streamproc-product.
 *
 * Whatever fails (network, timeout, an error answer, a renderer throwing), the page's own
 * content stays in place and nothing is thrown into the page. API: docs/api.md.
 */
(function (window, document) {
  "use strict";
  var earlier = window.streamproc;
  if (earlier && earlier.version) return; // loaded twice
  var script = document.currentScript || {};
  var attr = function (name) { return script.getAttribute ? script.getAttribute(name) : null; };
  var origin = (function () {
    try { return new URL(script.src, window.location.href).origin; } catch (e) { return ""; }
  })();
  var config = {
    api: (attr("data-api") || origin).replace(/\/+$/, ""),
    key: attr("data-key") || "",
    timeout: parseInt(attr("data-timeout"), 10) || 1000,
    pageView: attr("data-page-view") !== "false",
    cookie: "streamproc_id",
  };
  var ID = /^[A-Za-z0-9._:@-]{1,128}$/;
  var renderers = {};
  var queue = [];
  var waiting = [];
  var flushTimer = null;

  function randomId(prefix) {
    var bytes = new Uint8Array(12);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return prefix + Array.prototype.map.call(bytes, function (b) {
      return (b < 16 ? "0" : "") + b.toString(16);
    }).join("");
  }

  function readCookie() {
    var m = document.cookie.match(new RegExp("(?:^|; )" + config.cookie + "=([^;]*)"));
    return m && ID.test(decodeURIComponent(m[1])) ? decodeURIComponent(m[1]) : null;
  }

  function writeCookie(id) {
    document.cookie = config.cookie + "=" + encodeURIComponent(id) + "; path=/; max-age=" +
      400 * 86400 + "; SameSite=Lax" + (window.location.protocol === "https:" ? "; Secure" : "");
  }

  var customer = readCookie();
  if (!customer) { customer = randomId("anon-"); writeCookie(customer); }

  function call(method, path, body, timeoutMs, keepalive) {
    var headers = { "Content-Type": "application/json" };
    if (config.key) headers["X-API-Key"] = config.key;
    var abort = window.AbortController ? new AbortController() : null;
    var timer = abort && setTimeout(function () { abort.abort(); }, timeoutMs);
    return fetch(config.api + path, {
      method: method, headers: headers, body: JSON.stringify(body), keepalive: !!keepalive,
      credentials: "omit", signal: abort ? abort.signal : undefined,
    }).then(function (resp) {
      clearTimeout(timer);
      return resp.json().then(function (json) {
        if (!resp.ok) throw new Error(path + ": " + resp.status + " " + (json.error || ""));
        return json;
      });
    }, function (err) { clearTimeout(timer); throw err; });
  }

  function warn(err) {
    if (window.console && console.warn) console.warn("streamproc:", err && err.message || err);
  }

  function page() {
    var d = document.body ? document.body.dataset : {};
    var p = { url: window.location.href.slice(0, 2048), page_type: d.streamprocPage || "other" };
    if (d.streamprocCategory) p.category = d.streamprocCategory;
    if (d.streamprocProduct) p.product_id = d.streamprocProduct;
    return p;
  }

  function context() {
    var c = { device: /Mobi|Android|iPhone/.test(navigator.userAgent) ? "mobile" : "desktop" };
    if (navigator.language) c.locale = navigator.language.slice(0, 35);
    return c;
  }

  // Events of one moment go in one request; the promise says whether Kafka has them. Requests
  // are kept alive past the page's end (a click that leaves it), which allows 64 KB: 40 events.
  function flush() {
    flushTimer = null;
    var events = queue.splice(0, 40), done = waiting.splice(0, events.length);
    if (!events.length) return;
    var path = events[0].type === "feedback" ? "/v1/feedback" : "/v1/events";
    call("POST", path, events, 10000, true).then(function () {
      done.forEach(function (resolve) { resolve(true); });
    }, function (err) {
      warn(err);
      done.forEach(function (resolve) { resolve(false); });
    });
    if (queue.length) flush();
  }

  function send(type, fields) {
    var event = { type: type, customer_id: customer, channel: "web", context: context() };
    for (var k in fields) if (Object.prototype.hasOwnProperty.call(fields, k)) event[k] = fields[k];
    // feedback goes to its own endpoint: never in one request with other events
    if (queue.length && (queue[0].type === "feedback") !== (type === "feedback")) flush();
    return new Promise(function (resolve) {
      queue.push(event);
      waiting.push(resolve);
      if (!flushTimer) flushTimer = setTimeout(flush, 0);
    });
  }

  function product(p) {
    var out = { product_id: String(p.product_id || p.id), category: String(p.category),
                price: Number(p.price) };
    if (p.brand) out.brand = String(p.brand);
    return out;
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function defaultRender(decision) {
    var a = decision.action;
    return '<div class="streamproc-decision streamproc-' + escapeHtml(a.kind || "content") +
      '">' + escapeHtml(a.title || a.id) + "</div>";
  }

  function feedback(decision, outcome) {
    return send("feedback", { decision_id: decision.decision_id, outcome: outcome,
                              action_id: decision.action.id });
  }

  function watch(el, decision) {
    var seen = false, clicked = false;
    var impression = function () { if (!seen) { seen = true; feedback(decision, "impression"); } };
    if (window.IntersectionObserver) {
      var io = new IntersectionObserver(function (entries) {
        if (entries.some(function (e) { return e.isIntersecting; })) { io.disconnect(); impression(); }
      }, { threshold: 0.5 });
      io.observe(el);
    } else { impression(); }
    el.addEventListener("click", function () {
      if (clicked) return;
      clicked = true;
      impression();
      feedback(decision, "click");
      flush(); // the click may leave the page: keepalive carries the request
    }, true);
  }

  function fillOne(el) {
    var slot = el.getAttribute("data-streamproc-slot");
    el.setAttribute("data-streamproc-state", "loading");
    var body = { customer_id: customer, slot: slot, page: page(), context: context() };
    return call("POST", "/v1/decide", body, config.timeout).then(function (answer) {
      var decision = answer.decision;
      if (!decision || !decision.action || decision.action.id === "none") {
        el.setAttribute("data-streamproc-state", "kept");
        return decision || null;
      }
      var render = renderers[slot] || renderers["*"] || defaultRender;
      var html = render(decision, el);
      if (html === null || html === undefined) {
        el.setAttribute("data-streamproc-state", "kept");
        return decision;
      }
      if (typeof html === "string") el.innerHTML = html;
      else el.replaceChildren(html);
      el.setAttribute("data-streamproc-state", "filled");
      el.setAttribute("data-streamproc-action", decision.action.id);
      el.setAttribute("data-streamproc-decision", decision.decision_id);
      el.setAttribute("data-streamproc-personalised", String(!!decision.personalised));
      watch(el, decision);
      return decision;
    }).catch(function (err) {
      warn(err);
      el.setAttribute("data-streamproc-state", "kept");
      return null;
    });
  }

  var api = {
    version: "1",
    config: config,
    customerId: function () { return customer; },
    identify: function (id) {
      id = String(id);
      if (!ID.test(id)) { warn("identify: not a valid customer id"); return false; }
      // The anonymous visitor's history and cart become the customer's (docs/identity.md):
      // an identify event under the anonymous id, sent before the id changes.
      if (customer !== id && /^anon-/.test(customer)) send("identify", { identified_as: id });
      customer = id;
      writeCookie(id);
      return true;
    },
    reset: function () { customer = randomId("anon-"); writeCookie(customer); },
    track: send,
    pageView: function (fields) {
      var p = page(), f = { url: p.url, page_type: p.page_type };
      if (p.category) f.category = p.category;
      if (document.referrer) f.referrer = document.referrer.slice(0, 2048);
      for (var k in fields || {}) f[k] = fields[k];
      return send("page_view", f);
    },
    productView: function (p) { return send("product_view", { product: product(p) }); },
    search: function (query, resultsCount) {
      var f = { query: String(query).slice(0, 512) };
      if (resultsCount >= 0) f.results_count = resultsCount;
      return send("search", f);
    },
    cartAdd: function (p, quantity) {
      return send("cart_add", { product: product(p), quantity: quantity || 1 });
    },
    render: function (slot, fn) { renderers[slot] = fn; },
    fill: function (root) {
      var els = (root || document).querySelectorAll("[data-streamproc-slot]");
      return Promise.all(Array.prototype.map.call(els, fillOne));
    },
    feedback: feedback,
    flush: flush,
  };
  window.streamproc = api;

  // Calls made before this file loaded: window.streamproc = [["render", "hero", fn], ...]
  if (Array.isArray(earlier)) {
    earlier.forEach(function (c) {
      try { api[c[0]].apply(api, c.slice(1)); } catch (e) { warn(e); }
    });
  }

  // After DOMContentLoaded, so that the page's own deferred scripts have described it. While
  // "interactive" it may be pending (this file deferred) or past (loaded async): then "load".
  var started = false;
  function start() {
    if (started) return;
    started = true;
    if (config.pageView) api.pageView();
    api.fill();
  }
  if (document.readyState === "complete") setTimeout(start, 0);
  else {
    document.addEventListener("DOMContentLoaded", start);
    window.addEventListener("load", start);
  }
  window.addEventListener("pagehide", flush);
})(window, document);
