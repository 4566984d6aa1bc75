/* The demo shop's own code: its catalogue, its cart (in localStorage) and how it draws
 * streamproc's decisions. Everything streamproc does goes through window.streamproc (the
 * snippet); if the snippet is missing or failing, the shop still works with its own content. */
(function () {
  "use strict";
  var PRODUCTS = [
    { id: "shoes-7", name: "Trail Runner 2", category: "shoes", brand: "Stride", price: 89.95,
      colour: "#e4572e", blurb: "Grippy, light and made for muddy mornings." },
    { id: "shoes-12", name: "Road Racer", category: "shoes", brand: "Stride", price: 119.0,
      colour: "#2e86ab", blurb: "A springy daily trainer for long road miles." },
    { id: "shoes-3", name: "City Sneaker", category: "shoes", brand: "Lumen", price: 74.5,
      colour: "#3d3b8e", blurb: "Clean leather upper, all-day cushioning." },
    { id: "shoes-21", name: "Ridge Hiking Boot", category: "shoes", brand: "Northfold",
      price: 139.0, colour: "#8c5a3c", blurb: "Waterproof, ankle support, Vibram sole." },
    { id: "apparel-4", name: "Merino Tee", category: "apparel", brand: "Lumen", price: 39.0,
      colour: "#4f9d69", blurb: "Soft merino that stays fresh for days." },
    { id: "apparel-9", name: "Storm Rain Shell", category: "apparel", brand: "Northfold",
      price: 129.0, colour: "#f2a541", blurb: "Three-layer shell that packs into its pocket." },
    { id: "apparel-2", name: "Fleece Hoodie", category: "apparel", brand: "Stride", price: 69.0,
      colour: "#9b5de5", blurb: "Brushed fleece for cold starts." },
    { id: "bags-5", name: "Day Pack 20L", category: "bags", brand: "Northfold", price: 59.0,
      colour: "#1b998b", blurb: "Padded laptop sleeve, bottle pockets both sides." },
    { id: "bags-8", name: "Weekender Duffel", category: "bags", brand: "Lumen", price: 98.0,
      colour: "#5c4d7d", blurb: "Waxed canvas, fits under a plane seat." },
    { id: "bags-1", name: "Hip Pack", category: "bags", brand: "Stride", price: 29.0,
      colour: "#ef476f", blurb: "Phone, keys, snacks. Nothing bounces." },
    { id: "baby-3", name: "Organic Onesie", category: "baby", brand: "Little Fern", price: 19.9,
      colour: "#f4a7b9", blurb: "Organic cotton, poppers that behave." },
    { id: "baby-6", name: "Soft Baby Sling", category: "baby", brand: "Little Fern",
      price: 54.0, colour: "#7fb7be", blurb: "Carry them close, hands free." },
  ];
  var CATEGORIES = { shoes: "Shoes", apparel: "Clothing", bags: "Bags", baby: "Baby" };
  var FREE_DELIVERY = 50;
  // Simple shapes drawn per category, so the shop needs no image from anywhere.
  var SHAPES = {
    shoes: '<path d="M14 64 L16 46 C17 41 22 40 26 42 L36 48 C40 50 44 49 46 46 L52 36 ' +
      'C54 33 58 33 60 36 L66 48 C72 52 84 55 88 60 C91 63 90 66 87 66 Z" fill="#fff" ' +
      'opacity=".92"/><rect x="12" y="64" width="80" height="9" rx="4" fill="#fff" opacity=".65"/>' +
      '<path d="M50 44 l6 3 M47 49 l6 3 M44 54 l6 3" stroke="#000" stroke-opacity=".25" ' +
      'stroke-width="2.5" stroke-linecap="round"/>',
    apparel: '<path d="M38 24 L50 30 L62 24 L80 34 L74 46 L68 43 L68 76 L32 76 L32 43 L26 46 ' +
      'L20 34 Z" fill="#fff" opacity=".92"/>',
    bags: '<rect x="26" y="36" width="50" height="40" rx="8" fill="#fff" opacity=".92"/>' +
      '<path d="M40 36 C40 24 62 24 62 36" stroke="#fff" stroke-width="5" fill="none"/>',
    baby: '<circle cx="50" cy="34" r="11" fill="#fff" opacity=".92"/><path d="M32 76 C32 56 ' +
      '38 48 50 48 C62 48 68 56 68 76 Z" fill="#fff" opacity=".92"/>',
  };

  function $(sel, root) { return (root || document).querySelector(sel); }
  function money(v) { return "\u20ac" + Number(v).toFixed(2); }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function byId(id) { return PRODUCTS.filter(function (p) { return p.id === id; })[0]; }
  function param(name) { return new URLSearchParams(window.location.search).get(name); }
  // streamproc, if it loaded: the shop never depends on it
  function sp(method) {
    var s = window.streamproc, args = Array.prototype.slice.call(arguments, 1);
    if (s && typeof s[method] === "function") {
      try { return s[method].apply(s, args); } catch (e) { /* the shop goes on */ }
    }
    return Promise.resolve(false);
  }

  function picture(p, size) {
    return '<svg class="pic" viewBox="0 0 100 100" width="' + size + '" height="' + size +
      '" role="img" aria-label="' + esc(p.name) + '"><rect width="100" height="100" rx="6" ' +
      'fill="' + p.colour + '"/>' + SHAPES[p.category] + "</svg>";
  }

  function card(p) {
    return '<a class="card" href="product.html?p=' + p.id + '" data-product="' + p.id + '">' +
      picture(p, 220) + '<span class="brand">' + esc(p.brand) + '</span><span class="name">' +
      esc(p.name) + '</span><span class="price">' + money(p.price) + "</span></a>";
  }

  // -- the cart, in this browser ---------------------------------------------------------------
  function cart() {
    try { return JSON.parse(localStorage.getItem("demo_cart") || "[]"); } catch (e) { return []; }
  }
  function saveCart(lines) {
    localStorage.setItem("demo_cart", JSON.stringify(lines));
    showCount();
  }
  function cartTotal() {
    return cart().reduce(function (t, l) { var p = byId(l.id); return t + (p ? p.price * l.qty : 0); }, 0);
  }
  function showCount() {
    var n = cart().reduce(function (t, l) { return t + l.qty; }, 0);
    var badge = $("#cart-count");
    if (badge) { badge.textContent = n; badge.hidden = n === 0; }
  }
  function addToCart(p) {
    var lines = cart(), line = lines.filter(function (l) { return l.id === p.id; })[0];
    if (line) line.qty += 1; else lines.push({ id: p.id, qty: 1 });
    saveCart(lines);
    return sp("cartAdd", { product_id: p.id, category: p.category, brand: p.brand, price: p.price }, 1);
  }

  // -- how decisions look in this shop -----------------------------------------------------------
  function offerLine(a) {
    var pr = a.params || {};
    if (pr.discount_pct && pr.category) {
      return pr.discount_pct + "% off everything in " + (CATEGORIES[pr.category] || pr.category) +
        " \u2014 applied at checkout.";
    }
    if (pr.discount_pct) return pr.discount_pct + "% off today, applied at checkout.";
    return "Our most-loved pieces, restocked this week.";
  }
  sp("render", "homepage_hero", function (d) {
    var a = d.action, cat = (a.params || {}).category;
    return '<div class="hero hero-' + esc(a.kind) + '"><div class="hero-text"><span class="eyebrow">' +
      (d.personalised ? "Picked for you" : "This week") + "</span><h1>" + esc(a.title) +
      "</h1><p>" + esc(offerLine(a)) + '</p><a class="button" href="' +
      (cat ? "category.html?c=" + esc(cat) : "#featured") + '">Shop ' +
      esc(CATEGORIES[cat] || "bestsellers") + "</a></div>" +
      '<div class="hero-art">' + picture(PRODUCTS[cat === "baby" ? 10 : 0], 260) + "</div></div>";
  });
  sp("render", "product_recs", function (d) {
    var a = d.action, cat = (a.params || {}).category, here = param("p");
    var recs = (a.params || {}).products, line = offerLine(a);
    var picks = PRODUCTS.filter(function (p) { return p.id !== here && (!cat || p.category === cat); });
    if (recs && recs.length) {  // a recommendation: the customer's products, best first
      var known = recs.filter(function (r) { return byId(r.id); });
      if (known.length) {
        picks = known.map(function (r) { return byId(r.id); });
        line = "Picked for you: " + known[0].reason + ".";
      }
    }
    return '<div class="recs"><div class="recs-head"><h2>' + esc(a.title) + "</h2><p>" +
      esc(line) + '</p></div><div class="grid small">' +
      picks.slice(0, 4).map(card).join("") + "</div></div>";
  });
  sp("render", "cart_drawer", function (d) {
    var a = d.action, pr = a.params || {}, total = cartTotal();
    var body = "", gap = Math.max(0, (pr.threshold || FREE_DELIVERY) - total);
    if (a.id === "free_delivery_nudge" || (a.id === "free_delivery_banner" && gap > 0)) {
      body = "<p>You are <strong>" + money(gap) + "</strong> away from free delivery.</p>" +
        '<div class="meter"><span style="width:' + Math.min(100, 100 * total / FREE_DELIVERY) +
        '%"></span></div>';
    } else if (a.id === "cart_reminder") {
      body = "<p>We are holding your basket (" + money(pr.cart_value || total) +
        ") for you. Check out today and it ships tomorrow.</p>";
    } else {
      body = "<p>" + esc(offerLine(a)) + "</p>";
    }
    var pick = PRODUCTS.filter(function (p) {
      return !cart().some(function (l) { return l.id === p.id; }) && p.price <= Math.max(gap, 30) + 10;
    })[0];
    return '<div class="drawer-offer' + (d.personalised ? " personal" : "") + '">' +
      '<span class="eyebrow">' + (d.personalised ? "Just for your basket" : "Good to know") +
      "</span><h3>" + esc(a.title) + "</h3>" + body +
      (pick ? '<a class="mini" href="product.html?p=' + pick.id + '">' + picture(pick, 56) +
        "<span>" + esc(pick.name) + "<br><b>" + money(pick.price) + "</b></span></a>" : "") +
      "</div>";
  });

  // -- pages --------------------------------------------------------------------------------------
  function describe(type, extra) {
    var b = document.body.dataset;
    b.streamprocPage = type;
    for (var k in extra || {}) if (extra[k]) b[k] = extra[k];
  }

  var pages = {
    home: function () {
      describe("home");
      $("#featured").innerHTML = [0, 4, 7, 10, 1, 5, 8, 11].map(function (i) {
        return card(PRODUCTS[i]);
      }).join("");
    },
    category: function () {
      var q = (param("q") || "").trim().toLowerCase(), c = param("c") || "shoes";
      var found;
      if (q) {
        found = PRODUCTS.filter(function (p) {
          return (p.name + " " + p.category + " " + p.brand).toLowerCase().indexOf(q) >= 0;
        });
        describe("search");
        $("#title").textContent = "Results for \u201c" + param("q") + "\u201d";
        $("#crumb").textContent = "Search";
        sp("search", param("q"), found.length);
      } else {
        found = PRODUCTS.filter(function (p) { return p.category === c; });
        describe("category", { streamprocCategory: c });
        $("#title").textContent = CATEGORIES[c] || c;
        $("#crumb").textContent = CATEGORIES[c] || c;
        var link = $('nav a[data-c="' + c + '"]');
        if (link) link.classList.add("active");
      }
      $("#count").textContent = found.length + (found.length === 1 ? " product" : " products");
      $("#results").innerHTML = found.map(card).join("") ||
        '<p class="empty">Nothing matches \u2014 try \u201cboots\u201d or \u201cbag\u201d.</p>';
    },
    product: function () {
      var p = byId(param("p")) || PRODUCTS[0];
      describe("product", { streamprocCategory: p.category, streamprocProduct: p.id });
      document.title = p.name + " \u00b7 Kestrel Supply Co.";
      $("#crumb-cat").textContent = CATEGORIES[p.category];
      $("#crumb-cat").href = "category.html?c=" + p.category;
      $("#crumb-name").textContent = p.name;
      $("#pic").innerHTML = picture(p, 420);
      $("#brand").textContent = p.brand;
      $("#name").textContent = p.name;
      $("#price").textContent = money(p.price);
      $("#blurb").textContent = p.blurb;
      sp("productView", { product_id: p.id, category: p.category, brand: p.brand, price: p.price });
      $("#add").addEventListener("click", function () {
        var button = this;
        button.disabled = true;
        addToCart(p).then(function () {
          button.disabled = false;
          $("#added").hidden = false;
        });
      });
    },
    cart: function () {
      describe("cart");
      var lines = cart();
      $("#lines").innerHTML = lines.map(function (l) {
        var p = byId(l.id);
        return p ? '<div class="line">' + picture(p, 88) + '<div><a href="product.html?p=' + p.id +
          '">' + esc(p.name) + '</a><span class="muted">' + esc(p.brand) + " \u00b7 qty " + l.qty +
          '</span></div><strong>' + money(p.price * l.qty) + "</strong></div>" : "";
      }).join("") || '<p class="empty">Your basket is empty. <a href="index.html">Start shopping</a></p>';
      var total = cartTotal();
      $("#subtotal").textContent = money(total);
      $("#delivery").textContent = total >= FREE_DELIVERY || total === 0 ? "Free" : money(4.95);
      $("#total").textContent = money(total + (total >= FREE_DELIVERY || total === 0 ? 0 : 4.95));
    },
  };

  // -- consent ------------------------------------------------------------------------------------
  // streamproc profiles nobody without personalisation consent (STREAMPROC_CONSENT_DEFAULTS
  // denies it by default): the banner asks once and sends the answer as a consent_update.
  var CONSENT_KEY = "kestrel-consent";
  function consentBanner() {
    if (!window.streamproc || localStorage.getItem(CONSENT_KEY) !== null) return;
    var bar = document.createElement("div");
    bar.className = "consent";
    bar.setAttribute("role", "dialog");
    bar.setAttribute("aria-label", "Personalisation");
    bar.innerHTML = "<p>May we personalise this shop from what you look at and buy here? " +
      "You can change your mind at any time.</p>" +
      '<button type="button" data-answer="yes">Personalise</button>' +
      '<button type="button" data-answer="no" class="secondary">No thanks</button>';
    bar.addEventListener("click", function (e) {
      var answer = e.target && e.target.getAttribute && e.target.getAttribute("data-answer");
      if (!answer) return;
      localStorage.setItem(CONSENT_KEY, answer);
      bar.remove();
      sp("track", "consent_update", { purpose: "personalisation", granted: answer === "yes",
                                      source: "demo_banner" });
    });
    document.body.appendChild(bar);
  }

  showCount();
  consentBanner();
  var which = document.documentElement.getAttribute("data-page");
  if (pages[which]) pages[which]();
  // Sign in (a demo account, the same member for this browser; a real shop's login goes here):
  // the snippet's identify() sends an identify event under the anonymous id, so the visitor's
  // cart and interests become the member's (docs/identity.md), and the basket opens.
  var signin = $("#signin");
  if (signin && window.streamproc) {
    if (!/^anon-/.test(window.streamproc.customerId())) {
      signin.textContent = "Signed in";
      signin.removeAttribute("href");
    }
    signin.addEventListener("click", function (e) {
      e.preventDefault();
      var id = window.streamproc.customerId();
      if (!/^anon-/.test(id)) return;
      window.streamproc.identify("member-" + id.slice(5, 17));
      window.location.href = "cart.html";  // leaving the page sends the event (keepalive)
    });
  }
  var who = $("#who");
  if (who && window.streamproc) who.textContent = "You are " + window.streamproc.customerId();
  window.demoShop = { products: PRODUCTS, cart: cart };
})();
