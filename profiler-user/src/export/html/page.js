// tprof's HTML report: draws the page from the JSON document in #tprof-data. Every value
// goes into the document as text (textContent, SVG attributes), never as markup.
"use strict";
(function () {
  var errors = [];
  function noteError(msg) {
    errors.push(String(msg));
    document.body.setAttribute("data-error-count", String(errors.length));
    document.body.setAttribute("data-errors", errors.join(" | "));
  }
  window.addEventListener("error", function (e) { noteError("Uncaught " + (e.message || e)); });
  var consoleError = console.error;
  console.error = function () {
    noteError("console.error: " + Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };

  var SVG = "http://www.w3.org/2000/svg";
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    (kids || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    });
    return e;
  }
  function svg(tag, attrs, title) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (title) {
      var t = document.createElementNS(SVG, "title");
      t.textContent = title;
      e.appendChild(t);
    }
    return e;
  }
  function text(x, y, s, anchor) {
    var t = svg("text", { x: x, y: y, "text-anchor": anchor || "start" });
    t.textContent = s;
    return t;
  }
  function ms(ns) {
    if (ns === null || ns === undefined) return "?";
    return (ns / 1e6).toFixed(3);
  }
  function dur(ns) {
    if (ns === null || ns === undefined) return "?";
    if (ns < 1e3) return Math.round(ns) + " ns";
    if (ns < 1e6) return +(ns / 1e3).toPrecision(3) + " µs";
    if (ns < 1e9) return +(ns / 1e6).toPrecision(3) + " ms";
    return +(ns / 1e9).toPrecision(3) + " s";
  }
  function plural(n, what) {
    return n + " " + what + (n === 1 ? "" : "s");
  }

  function header(d, root) {
    var h = d.header, left = d.left;
    root.appendChild(el("h1", {}, ["tprof report"]));
    root.appendChild(el("div", { class: "note" }, [d.version]));
    var facts = el("dl", { class: "facts", id: "header" });
    function fact(k, v, cls) {
      facts.appendChild(el("dt", {}, [k]));
      facts.appendChild(el("dd", cls ? { class: cls } : {}, [v]));
    }
    fact("targets", h.pids.length ? "pids " + h.pids.join(", ") : "from the recording");
    h.processes.forEach(function (p) {
      fact("process", p.describe + (p.service ? " — " + p.service : "") + (p.command ? " — " + p.command : ""));
    });
    if (h.more_processes) fact("processes", h.more_processes + " more not listed");
    fact("duration", dur(h.duration_ns) + " (" + h.stop_reason + ")");
    fact("records", h.records + " records (" + h.events + " kernel events, " + h.summed + " short intervals summed in the kernel), " +
      h.tasks_ended + " tasks ended, " + h.sites + " probe sites" + (h.probe_links ? " (" + h.probe_links + ")" : ""));
    var lost = h.kernel_drops_total + " kernel records lost";
    var kinds = Object.keys(h.kernel_drops).map(function (k) { return k + " " + h.kernel_drops[k]; });
    if (kinds.length) lost += " (" + kinds.join(", ") + ": try a larger --ring-size)";
    fact("losses", lost, h.kernel_drops_total ? "warn" : null);
    if (h.missed_switch_ins) fact("missed switch-ins", h.missed_switch_ins + " (those off-CPU intervals end at the next sign of life)", "warn");
    if (h.stacks_lost) fact("stacks lost", String(h.stacks_lost), "warn");
    if (h.undecodable) fact("undecodable", String(h.undecodable), "warn");
    if (h.filtered_events) fact("filtered", h.filtered_events + " events held by --min-latency and discarded");
    if (h.other_types) fact("task types", h.other_types + " tasks of types beyond the first ones tracked, not in the table", "warn");
    h.warnings.forEach(function (w) { fact("warning", w, "warn"); });
    var shown = left.shown + " of " + left.requests + " requests drawn (the " + left.top_overall + " slowest, and the " +
      left.top_per_type + " slowest of each of the first " + left.max_types + " task types)";
    if (left.unranked) shown += "; " + left.unranked + " without a known latency (began before attach or never ended) not ranked";
    if (left.over_types) shown += "; " + left.over_types + " requests of further task types ranked overall only";
    if (left.orphan_pieces) shown += "; " + left.orphan_pieces + " intervals of tasks with no summary not drawn";
    if (left.extras_left_out) shown += "; " + left.extras_left_out + " embedded images left out (size bound)";
    fact("this page", shown);
    root.appendChild(facts);
  }

  function typeTable(d, root) {
    root.appendChild(el("h2", {}, ["Task types"]));
    if (!d.types.length) { root.appendChild(el("p", {}, ["No task ended in this session."])); return; }
    var cols = ["task type", "count", "p50 ms", "p90 ms", "p99 ms", "max ms", "avg on-CPU", "avg run queue", "avg blocked", "avg unscheduled", "avg syscalls", "incomplete"];
    var t = el("table", { class: "types", id: "types" }, [el("tr", {}, cols.map(function (c) { return el("th", {}, [c]); }))]);
    d.types.forEach(function (ty, i) {
      var nums = [ty.count, ms(ty.p50), ms(ty.p90), ms(ty.p99), ms(ty.max), ms(ty.avg_on_cpu), ms(ty.avg_runq), ms(ty.avg_blocked), ms(ty.avg_unscheduled), ms(ty.avg_syscalls), ty.incomplete];
      t.appendChild(el("tr", { "data-type": ty.name }, [el("td", {}, [el("a", { href: "#type-" + i }, [ty.name])])].concat(nums.map(function (n) { return el("td", { class: "num" }, [n]); }))));
    });
    root.appendChild(t);
    root.appendChild(el("p", { class: "note" }, ["Latency percentiles are upper bounds within 6.25% (log-linear histogram). Averages are over the tasks with a complete ledger; times in ms."]));
  }

  function histogram(ty) {
    var W = 420, H = 80, pad = 24, bins = ty.hist;
    var s = svg("svg", { width: W, height: H + 36, class: "hist", viewBox: "0 0 " + W + " " + (H + 36) });
    if (!bins.length) return s;
    var max = Math.max.apply(null, bins.map(function (b) { return b[2]; }));
    // One power of two of room on each side, so a lone bucket is not the whole width.
    var lo = Math.log2(Math.max(bins[0][0], 1)) - 1, hi = Math.log2(bins[bins.length - 1][1] + 1) + 1;
    var span = hi - lo, plot = W - 2 * pad;
    function X(v) { return pad + (Math.log2(Math.max(v, 1)) - lo) / span * plot; }
    s.appendChild(svg("line", { x1: pad, y1: H, x2: W - pad, y2: H, class: "axis" }));
    bins.forEach(function (b) {
      var x0 = X(b[0]), x1 = X(b[1] + 1), h = Math.max(1, b[2] / max * (H - 14));
      s.appendChild(svg("rect", { x: x0 + 1, y: H - h, width: Math.max(1, x1 - x0 - 2), height: h, class: "bar" },
        dur(b[0]) + " – " + dur(b[1]) + ": " + plural(b[2], "request")));
      s.appendChild(text((x0 + x1) / 2, H - h - 3, String(b[2]), "middle"));
    });
    var step = Math.max(1, Math.round(span / 5));
    for (var k = Math.ceil(lo); k <= Math.floor(hi); k += step) {
      var x = pad + (k - lo) / span * plot;
      s.appendChild(svg("line", { x1: x, y1: H, x2: x, y2: H + 4, class: "axis" }));
      s.appendChild(text(x, H + 15, dur(Math.pow(2, k)), "middle"));
    }
    s.appendChild(text(W / 2, H + 31, "latency (log scale, power-of-two buckets)", "middle"));
    return s;
  }

  function frame(e) {
    var f = el("iframe", { class: "extra", sandbox: "allow-scripts", title: e.title });
    f.setAttribute("src", "data:image/svg+xml;charset=utf-8," + encodeURIComponent(e.svg));
    return el("div", { class: "extra-item" }, [el("h4", {}, [e.title]), f]);
  }

  function types(d, root) {
    root.appendChild(el("h2", {}, ["Latency per task type"]));
    var cards = el("div", { class: "cards" });
    d.types.forEach(function (ty, i) {
      var sec = el("section", { id: "type-" + i, class: "type", "data-type": ty.name });
      sec.appendChild(el("h3", {}, [ty.name + " — " + plural(ty.count, "request")]));
      sec.appendChild(histogram(ty));
      if (ty.slowest.length) {
        var ul = el("ul", { class: "slowest" });
        ty.slowest.forEach(function (span) {
          var r = d.requests.filter(function (q) { return q.span_id === span; })[0];
          ul.appendChild(el("li", {}, [el("a", { href: "#req-" + span }, ["span " + span]), r ? " — " + ms(r.wall_ns) + " ms" : ""]));
        });
        sec.appendChild(el("div", {}, ["Slowest:", ul]));
      }
      var n = d.extras.filter(function (e) { return e.task_type === ty.name; }).length;
      sec.appendChild(el("div", { class: "note" }, [n ? el("a", { href: "#flame-" + i }, ["flame graphs (" + n + ")"]) : "no flame graph of this type in this report"]));
      cards.appendChild(sec);
    });
    root.appendChild(cards);
  }

  // Flame graphs and other images other parts of tprof add, per task type, then the
  // session-wide ones.
  function flamegraphs(d, root) {
    root.appendChild(el("h2", {}, ["Flame graphs"]));
    if (!d.extras.length) { root.appendChild(el("p", { class: "note", id: "no-flamegraphs" }, ["No flame graph in this report."])); return; }
    d.types.forEach(function (ty, i) {
      var mine = d.extras.filter(function (e) { return e.task_type === ty.name; });
      var sec = el("section", { id: "flame-" + i, class: "flamegraphs", "data-type": ty.name }, [el("h3", {}, [ty.name])]);
      if (mine.length) mine.forEach(function (e) { sec.appendChild(frame(e)); });
      else sec.appendChild(el("p", { class: "note" }, ["None for this task type."]));
      root.appendChild(sec);
    });
    var known = d.types.map(function (t) { return t.name; });
    var general = d.extras.filter(function (e) { return e.task_type === null || known.indexOf(e.task_type) < 0; });
    if (general.length) {
      var sec = el("section", { class: "flamegraphs", id: "flame-session" }, [el("h3", {}, ["Whole session"])]);
      general.forEach(function (e) { sec.appendChild(frame(e)); });
      root.appendChild(sec);
    }
  }

  var COLORS = [["on", "on CPU"], ["runq", "run queue"], ["blocked", "blocked"], ["sys", "syscall"], ["summed", "summed short intervals (not drawn one by one)"], ["critbar", "critical path"]];

  function waterfall(r) {
    var L = 170, W = 1100, wall = Math.max(r.wall_ns || 1, 1), y = 0, rows = [];
    var s = svg("svg", { class: "waterfall", width: L + W + 10 });
    function X(t) { return L + Math.min(Math.max(t, 0), wall) / wall * W; }
    function Wd(a, b) { return Math.max(X(b) - X(a), 1); }
    function row(label, h) { s.appendChild(text(4, y + h - 3, label)); var top = y; y += h + 3; return top; }
    var top = row(r.name, 14);
    s.appendChild(svg("rect", { x: L, y: top, width: W, height: 14, class: "task" }, r.name + ": " + dur(r.wall_ns)));
    var depth = 0;
    r.regions.forEach(function (g) { depth = Math.max(depth, Math.min(g.depth, 7)); });
    if (r.regions.length) {
      var base = y;
      for (var k = 0; k <= depth; k++) row(k === 0 ? "regions" : "", 12);
      r.regions.forEach(function (g) {
        var end = g.end === null ? wall : g.end, yy = base + Math.min(g.depth, 7) * 15;
        s.appendChild(svg("rect", { x: X(g.start), y: yy, width: Wd(g.start, end), height: 12, class: "region" }, g.name + ": " + dur(end - g.start) + (g.end === null ? " (open)" : "")));
        if (Wd(g.start, end) > 40) s.appendChild(text(X(g.start) + 3, yy + 10, g.name));
      });
    }
    var lanes = {};
    r.threads.forEach(function (th) {
      var ty = row("tid " + th.tid + (th.name ? " " + th.name : ""), 18);
      lanes[th.tid] = ty;
      th.pieces.forEach(function (p) {
        var kind = p[0], a = p[1], b = p[2], tip = p[3] + ": " + dur(b - a) + " at +" + ms(a) + " ms";
        if (kind === "sys") s.appendChild(svg("rect", { x: X(a), y: ty + 14, width: Wd(a, b), height: 4, class: "sys" }, tip));
        else if (kind === "summed") s.appendChild(svg("path", { d: "M" + (X(a) - 4) + " " + ty + "h8l-4 6z", class: "summed" }, p[3]));
        else s.appendChild(svg("rect", { x: X(a), y: ty, width: Wd(a, b), height: 12, class: kind }, tip));
      });
    });
    if (r.critical.length) {
      var cy = row("critical path", 12);
      r.critical.forEach(function (c) {
        s.appendChild(svg("rect", { x: X(c.start), y: cy, width: Wd(c.start, c.end), height: 12, class: "critbar" }, c.label + ": " + dur(c.end - c.start)));
        if (lanes[c.tid] !== undefined) s.appendChild(svg("rect", { x: X(c.start), y: lanes[c.tid] - 1, width: Wd(c.start, c.end), height: 14, class: "crit" }, c.label));
      });
    }
    var ay = y + 2;
    s.appendChild(svg("line", { x1: L, y1: ay, x2: L + W, y2: ay, class: "axis" }));
    for (var i = 0; i <= 4; i++) {
      var t = wall * i / 4;
      s.appendChild(svg("line", { x1: X(t), y1: ay, x2: X(t), y2: ay + 4, class: "axis" }));
      s.appendChild(text(X(t), ay + 16, "+" + ms(t) + " ms", i === 0 ? "start" : i === 4 ? "end" : "middle"));
    }
    s.setAttribute("height", ay + 22);
    return s;
  }

  function stack(st) {
    var lines = [];
    st.kernel.forEach(function (f, i) { lines.push((i ? "        " : "kernel: ") + f); });
    st.user.forEach(function (f, i) { lines.push((i ? "        " : "user:   ") + f); });
    if (st.user_truncated) lines.push("(user stack likely truncated: code without frame pointers)");
    return el("details", { class: "stack" }, [el("summary", {}, ["stack (" + (st.kernel.length + st.user.length) + " frames)"]), el("div", { class: "frames" }, [lines.join("\n")])]);
  }

  function block(b) {
    var what = "blocked " + ms(b.blocked_ns) + " ms" + (b.syscall ? " in " + b.syscall : "") + " (tid " + b.tid + ", at +" + ms(b.start) + " ms), " + b.waker.describe + (b.waker_task ? " \"" + b.waker_task + "\"" : "");
    var kids = [el("summary", {}, [what])];
    b.chain.forEach(function (c) {
      kids.push(el("div", { class: "chain" }, ["← which was itself blocked " + ms(c.blocked_ns) + " ms" + (c.syscall ? " in " + c.syscall : "") + " in task \"" + (c.name || "?") + "\" span " + c.span_id + ", " + c.waker.describe]));
    });
    if (b.stack) kids.push(stack(b.stack));
    return el("details", { class: "block", open: "" }, kids);
  }

  function request(r) {
    var sec = el("section", { class: "request", id: "req-" + r.span_id, "data-span": r.span_id, "data-type": r.name, "data-wall-ns": String(r.wall_ns) });
    sec.appendChild(el("h3", {}, ["\"" + r.name + "\" — " + ms(r.wall_ns) + " ms" + (r.top ? "" : " (among its type's slowest)")]));
    sec.appendChild(el("div", { class: "mono note" }, ["trace " + r.trace_id + " span " + r.span_id + " parent " + r.parent_span_id + " · " + (r.process || "pid " + r.pid)]));
    sec.appendChild(el("div", {}, ["on CPU " + ms(r.on_cpu_ns) + " ms · run queue " + ms(r.runq_ns) + " ms · blocked " + ms(r.blocked_ns) +
      " ms · unscheduled " + ms(r.unscheduled_ns) + " ms · syscalls " + ms(r.syscall_ns) + " ms" + (r.steal_ns ? " · stolen " + ms(r.steal_ns) + " ms" : "")]));
    if (r.incomplete) sec.appendChild(el("div", { class: "warn" }, ["INCOMPLETE: " + r.incomplete]));
    sec.appendChild(waterfall(r));
    var notes = [];
    if (r.summed) notes.push(r.summed + " short intervals were summed in the kernel: in the totals above and marked ▾ where the kernel reported their sums, not drawn one by one");
    if (r.left_out) notes.push(r.left_out + " streamed intervals not drawn (this page keeps at most the first " + (window.TPROF_PIECES || "") + " of a request)");
    if (r.critical_left_out) notes.push(r.critical_left_out + " critical-path steps not drawn");
    notes.forEach(function (n) { sec.appendChild(el("div", { class: "note" }, [n])); });
    if (r.blocks.length) {
      sec.appendChild(el("h4", {}, ["Longest blocks"]));
      r.blocks.forEach(function (b) { sec.appendChild(block(b)); });
    }
    if (r.waited_on.length) sec.appendChild(el("div", {}, ["waited on tasks: " + r.waited_on.map(function (w) { return "\"" + (w.name || "?") + "\" span " + w.span_id + " " + ms(w.ns) + " ms"; }).join(", ")]));
    if (r.syscalls.length) sec.appendChild(el("div", {}, ["top syscalls: " + r.syscalls.map(function (c) { return c.name + " " + c.count + "× " + ms(c.total_ns) + " ms" + (c.errors ? " (" + c.errors + " errors)" : ""); }).join(", ")]));
    if (r.logs.length) sec.appendChild(el("div", {}, ["logs: " + r.logs.map(function (l) { return l[0] + "=" + l[1]; }).join(" ")]));
    return sec;
  }

  function requests(d, root) {
    root.appendChild(el("h2", {}, ["Slowest requests"]));
    root.appendChild(el("div", { class: "legend" }, COLORS.map(function (c) { return el("span", {}, [el("i", { style: "background: var(--" + (c[0] === "critbar" ? "crit" : c[0]) + ")" }), c[1]]); })));
    if (!d.requests.length) root.appendChild(el("p", {}, ["No request with a known latency."]));
    d.requests.forEach(function (r) { root.appendChild(request(r)); });
  }

  try {
    var d = JSON.parse(document.getElementById("tprof-data").textContent);
    window.TPROF_PIECES = d.left.pieces_per_task;
    var root = document.getElementById("report");
    header(d, root);
    typeTable(d, root);
    types(d, root);
    requests(d, root);
    flamegraphs(d, root);
    document.body.setAttribute("data-rendered", "1");
  } catch (e) {
    noteError("render: " + (e && e.stack ? e.stack : e));
  }
})();
