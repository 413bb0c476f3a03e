// The before/after views: a divider dragged across two chosen panels, a zoom that shows real pixels
// of a crop with the same divider. No network, no libraries.
(function () {
  "use strict";
  var ZOOM = 320;

  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }

  function View(root) {
    var meta = JSON.parse(root.getAttribute("data-view"));
    var q = function (sel) { return root.querySelector(sel); };
    var srcs = root.querySelectorAll("img.kd-src");
    var stage = q(".kd-stage"), zoom = q(".kd-zoom");
    var imgA = q(".kd-img-a"), imgB = q(".kd-img-b"), zA = q(".kd-zimg-a"), zB = q(".kd-zimg-b");
    var selA = q(".kd-select-a"), selB = q(".kd-select-b"), factorSel = q(".kd-zoom-factor");
    var state = { a: meta.a, b: meta.b, split: meta.w / 2, crop: 0, factor: factorSel ? +factorSel.value : 1,
                  cx: meta.w / 2, cy: meta.h / 2 };
    if (meta.crops.length) { state.cx = meta.crops[0][0] + meta.crops[0][2] / 2; state.cy = meta.crops[0][1] + meta.crops[0][3] / 2; }

    function source(panel) { return srcs[panel].getAttribute("src"); }
    function cropSource(panel, i) {
      return root.querySelector('img.kd-crop[data-panel="' + panel + '"][data-crop="' + i + '"]').getAttribute("src");
    }
    function cropRect() {
      if (meta.crops.length) { var c = meta.crops[state.crop]; return { x: c[0], y: c[1], w: c[2], h: c[3] }; }
      var w = Math.min(meta.w, ZOOM / state.factor), h = Math.min(meta.h, ZOOM / state.factor);
      return { x: clamp(state.cx - w / 2, 0, meta.w - w), y: clamp(state.cy - h / 2, 0, meta.h - h), w: w, h: h };
    }
    function setImage(img, panel, src) {
      if (img.getAttribute("src") !== src) img.setAttribute("src", src);
      img.classList.toggle("kd-pixelated", !!meta.panels[panel].lowres || (meta.enlarged && img.parentNode === stage));
    }

    function render() {
      setImage(imgA, state.a, source(state.a));
      setImage(imgB, state.b, source(state.b));
      var pct = 100 * state.split / meta.w;
      imgA.style.clipPath = "inset(0 " + (100 - pct) + "% 0 0)";
      q(".kd-divider").style.left = pct + "%";
      q(".kd-tag-a").textContent = meta.panels[state.a].label;
      q(".kd-tag-b").textContent = meta.panels[state.b].label;
      selA.value = String(state.a);
      selB.value = String(state.b);
      var r = cropRect(), k = ZOOM / Math.max(r.w, r.h);
      var box = q(".kd-cropbox");
      box.style.left = 100 * r.x / meta.w + "%"; box.style.top = 100 * r.y / meta.h + "%";
      box.style.width = 100 * r.w / meta.w + "%"; box.style.height = 100 * r.h / meta.h + "%";
      zoom.style.width = Math.round(r.w * k) + "px"; zoom.style.height = Math.round(r.h * k) + "px";
      [[zA, state.a], [zB, state.b]].forEach(function (pair) {
        var img = pair[0], panel = pair[1];
        if (meta.crops.length) {
          setImage(img, panel, cropSource(panel, state.crop));
          img.style.left = "0px"; img.style.top = "0px";
          img.style.width = r.w * k + "px"; img.style.height = r.h * k + "px";
        } else {
          setImage(img, panel, source(panel));
          img.style.left = -r.x * k + "px"; img.style.top = -r.y * k + "px";
          img.style.width = meta.w * k + "px"; img.style.height = meta.h * k + "px";
        }
      });
      var zx = clamp((state.split - r.x) * k, 0, r.w * k);
      var offset = meta.crops.length ? 0 : r.x * k;  // where the zoom image's box starts, in its own pixels
      var width = meta.crops.length ? r.w * k : meta.w * k;
      zA.style.clipPath = "inset(0 " + Math.max(0, width - offset - zx) + "px 0 0)";
      q(".kd-zdivider").style.left = zx + "px";
      q(".kd-zoom-caption").textContent = "zoom " + (k >= 1 ? k.toFixed(k % 1 ? 1 : 0) : k.toFixed(2)) + "× on x " +
        Math.round(r.x) + "–" + Math.round(r.x + r.w) + ", y " + Math.round(r.y) + "–" + Math.round(r.y + r.h) +
        " (" + meta.panels[state.a].label + " | " + meta.panels[state.b].label + ")";
      root.querySelectorAll(".kd-psnr-row td").forEach(function (td) {
        var p = +td.getAttribute("data-panel");
        td.classList.toggle("kd-on-a", p === state.a);
        td.classList.toggle("kd-on-b", p === state.b);
      });
      root.setAttribute("data-split", state.split.toFixed(1));
    }

    function imagePoint(el, ev) {
      var rect = el.getBoundingClientRect();
      return { x: (ev.clientX - rect.left) / rect.width, y: (ev.clientY - rect.top) / rect.height };
    }
    function chooseCrop(px, py) {
      if (!meta.crops.length) { state.cx = px; state.cy = py; return; }
      var best = 0, dist = Infinity;
      meta.crops.forEach(function (c, i) {
        var d = Math.hypot(c[0] + c[2] / 2 - px, c[1] + c[3] / 2 - py);
        if (d < dist) { dist = d; best = i; }
      });
      state.crop = best;
    }

    // drag: the divider follows; a click without movement places the zoom there
    var drag = null;
    stage.addEventListener("pointerdown", function (ev) {
      if (ev.button !== 0) return;
      drag = { x: ev.clientX, y: ev.clientY, moved: false };
      stage.setPointerCapture(ev.pointerId);
      ev.preventDefault();
      stage.focus();
    });
    stage.addEventListener("pointermove", function (ev) {
      if (!drag) return;
      if (!drag.moved && Math.hypot(ev.clientX - drag.x, ev.clientY - drag.y) < 3) return;
      drag.moved = true;
      state.split = clamp(imagePoint(stage, ev).x, 0, 1) * meta.w;
      render();
    });
    function release(ev) {
      if (!drag) return;
      if (!drag.moved && ev.type === "pointerup") {
        var p = imagePoint(stage, ev);
        chooseCrop(clamp(p.x, 0, 1) * meta.w, clamp(p.y, 0, 1) * meta.h);
        render();
      }
      drag = null;
    }
    stage.addEventListener("pointerup", release);
    stage.addEventListener("pointercancel", release);
    stage.addEventListener("keydown", function (ev) {
      var step = meta.w / (ev.shiftKey ? 10 : 50);
      if (ev.key === "ArrowLeft") state.split = clamp(state.split - step, 0, meta.w);
      else if (ev.key === "ArrowRight") state.split = clamp(state.split + step, 0, meta.w);
      else return;
      ev.preventDefault();
      render();
    });

    // the zoom: dragging in it moves the same divider
    var zdrag = false;
    zoom.addEventListener("pointerdown", function (ev) { zdrag = true; zoom.setPointerCapture(ev.pointerId); move(ev); ev.preventDefault(); });
    zoom.addEventListener("pointermove", function (ev) { if (zdrag) move(ev); });
    zoom.addEventListener("pointerup", function () { zdrag = false; });
    zoom.addEventListener("pointercancel", function () { zdrag = false; });
    function move(ev) {
      var r = cropRect();
      state.split = clamp(r.x + clamp(imagePoint(zoom, ev).x, 0, 1) * r.w, 0, meta.w);
      render();
    }

    selA.addEventListener("change", function () { state.a = +selA.value; render(); });
    selB.addEventListener("change", function () { state.b = +selB.value; render(); });
    q(".kd-swap").addEventListener("click", function () { var t = state.a; state.a = state.b; state.b = t; render(); });
    if (factorSel) factorSel.addEventListener("change", function () { state.factor = +factorSel.value; render(); });
    root.querySelectorAll(".kd-psnr-row td").forEach(function (td) {
      td.addEventListener("click", function (ev) {
        var p = +td.getAttribute("data-panel");
        if (ev.shiftKey || ev.altKey) state.b = p; else state.a = p;
        render();
      });
    });
    render();
    root.setAttribute("data-ready", "1");
  }

  document.querySelectorAll(".kd-compare").forEach(function (root) { View(root); });
  document.body.setAttribute("data-kd-views", String(document.querySelectorAll('.kd-compare[data-ready="1"]').length));
})();
