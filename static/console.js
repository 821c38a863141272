/* APIFrame console: copy buttons, live job progress (server-sent events), range read-outs. No build step. */
(function () {
  "use strict";

  var POLL_MS = 700;
  var RETRY_MS = 3000;

  /* ---- copy to clipboard (with a fallback for pages served over plain http on a LAN name) ---- */
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      try {
        if (document.execCommand("copy")) { resolve(); } else { reject(new Error("copy refused")); }
      } catch (error) {
        reject(error);
      } finally {
        area.remove();
      }
    });
  }

  /* Say what happened for a moment: in the label (shown even beside an icon alone) and in the name. */
  function flashLabel(button, text, className) {
    var label = button.querySelector("[data-copy-label]");
    var original = label ? label.textContent : "";
    var name = button.getAttribute("aria-label");
    if (label) { label.textContent = text; }
    if (name) { button.setAttribute("aria-label", text); }
    button.classList.add(className);
    window.setTimeout(function () {
      if (label) { label.textContent = original; }
      if (name) { button.setAttribute("aria-label", name); }
      button.classList.remove(className);
    }, 1600);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) { return; }
    var target = document.querySelector(button.getAttribute("data-copy"));
    if (!target) { return; }
    copyText(target.textContent.trim()).then(
      function () { flashLabel(button, "Copied", "copied"); },
      function () {
        var range = document.createRange();
        range.selectNodeContents(target);
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
        flashLabel(button, "Press Ctrl+C", "copy-failed");
      }
    );
  });

  /* ---- close an open "Revoke?" confirmation when clicking elsewhere ---- */
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details.confirm[open]").forEach(function (details) {
      if (!details.contains(event.target)) { details.removeAttribute("open"); }
    });
  });

  /* ---- forms: one submission at a time; ranges show their value ---- */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.submitting) { event.preventDefault(); return; }
    form.dataset.submitting = "1";
    form.setAttribute("aria-busy", "true");
  });
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-submitting]").forEach(function (form) {
      delete form.dataset.submitting;
      form.removeAttribute("aria-busy");
    });
  });
  document.addEventListener("input", function (event) {
    if (!event.target.matches("input[type=range]")) { return; }
    var output = document.querySelector('output[for="' + event.target.id + '"]');
    if (output) { output.textContent = event.target.value; }
  });

  /* ---- live jobs: follow the page's running jobs over one event stream; swap in the result when it ends.
     Polling is the fallback when the stream cannot be opened (say, too many streams open). ---- */
  function replaceWith(element, html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    var fresh = template.content.firstElementChild;
    if (!fresh) { return; }
    var focused = element.contains(document.activeElement) ? document.activeElement : null;
    element.replaceWith(fresh);
    if (focused) { refocus(focused, fresh); }
  }

  /* Focus that was inside a replaced element goes to the same control in its replacement (by id, or by its kind,
     address, name, value and text), or else to the replacement's heading, not to the page's start. */
  function refocus(old, fresh) {
    function key(element) {
      return [element.tagName, element.getAttribute("href"), element.getAttribute("name"), element.getAttribute("value"),
        element.getAttribute("data-copy"), element.textContent.trim()].join("\n");
    }
    var match = old.id ? fresh.querySelector("#" + CSS.escape(old.id)) : Array.prototype.find.call(
      fresh.querySelectorAll(old.tagName), function (element) { return key(element) === key(old); });
    if (!match || match.disabled || match.closest("[hidden]")) { match = fresh.querySelector("[data-focus-heading]"); }
    if (match) { match.focus(); }
    if (document.activeElement !== match) {  // it could not take the focus (in a closed details, say)
      var heading = fresh.querySelector("[data-focus-heading]");
      if (heading) { heading.focus(); }
    }
  }

  /* Say a job's new status once (a job may show in several views) in the page's polite live region, with its title:
     a gallery may follow several. */
  var announced = {};
  function announce(job) {
    if (announced[job.id] === job.status) { return; }
    announced[job.id] = job.status;
    var region = document.querySelector("[data-announce]");
    if (!region) { return; }
    var text = "Job \u201c" + job.title + "\u201d " + job.status.replace("_", " ") + (job.error ? ": " + job.error : "");
    region.textContent = "";
    window.setTimeout(function () { region.textContent = text; }, 100);  // a fresh text is read even if the same
  }

  function setProgress(element, percent) {
    var bar = element.querySelector("[data-progress]");
    if (bar) {
      bar.setAttribute("aria-valuenow", String(percent));
      var fill = bar.querySelector(".progress-bar");
      if (fill) { fill.style.width = percent + "%"; }
    }
    element.querySelectorAll("[data-progress-label]").forEach(function (label) {
      label.textContent = String(percent);
    });
  }

  function showBalance(balance) {
    if (balance === undefined) { return; }
    document.querySelectorAll("[data-balance]").forEach(function (element) { element.textContent = balance; });
  }

  function update(view, job) {
    var selector = '[data-live="' + view + '"][data-job="' + job.id + '"]';
    document.querySelectorAll(selector).forEach(function (element) {
      if (job.active && element.dataset.jobStatus === job.status) {
        setProgress(element, job.progress);
      } else {
        if (element.dataset.jobStatus !== job.status) { announce(job); }
        replaceWith(element, job.html);
      }
    });
  }

  function liveJobIds() {
    var ids = [];
    document.querySelectorAll("[data-live]").forEach(function (element) {
      if (ids.indexOf(element.dataset.job) < 0) { ids.push(element.dataset.job); }
    });
    return ids;
  }

  function refresh(url, jobId) {
    var seen = {};
    document.querySelectorAll('[data-live][data-job="' + jobId + '"]').forEach(function (element) {
      var view = element.dataset.live;
      if (seen[view]) { return; }
      seen[view] = true;
      var query = new URLSearchParams({ view: view, id: jobId });
      fetch(url + "?" + query.toString(), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      }).then(function (response) {
        if (response.status === 401) { window.location.reload(); }
        return response.ok ? response.json() : { jobs: [] };
      }).then(function (data) {
        showBalance(data.balance);
        data.jobs.forEach(function (job) { update(view, job); });
      });
    });
  }

  function follow(eventsUrl, liveUrl) {
    var ids = liveJobIds();
    if (!ids.length) { return; }
    var open = {};
    ids.forEach(function (id) { open[id] = true; });
    var query = new URLSearchParams();
    ids.forEach(function (id) { query.append("id", id); });
    var source = new EventSource(eventsUrl + "?" + query.toString());
    var heard = false;
    function data(event) { heard = true; return JSON.parse(event.data); }
    source.addEventListener("progress", function (event) {
      var job = data(event);
      document.querySelectorAll('[data-live][data-job="' + job.id + '"]').forEach(function (element) {
        setProgress(element, job.progress);
      });
    });
    source.addEventListener("status", function (event) {
      var job = data(event);
      var element = document.querySelector('[data-live][data-job="' + job.id + '"]');
      if (element && element.dataset.jobStatus !== job.status) { refresh(liveUrl, job.id); }
    });
    source.addEventListener("done", function (event) {
      var job = data(event);
      refresh(liveUrl, job.id);
      delete open[job.id];
      if (!Object.keys(open).length) { source.close(); }  // or EventSource would reconnect
    });
    source.onerror = function () {
      // Refused, at first or on reconnecting (the session ended: a poll's 401 then reloads the page).
      if (!heard || source.readyState === EventSource.CLOSED) {  // poll instead
        source.close();
        window.setTimeout(function () { poll(liveUrl); }, RETRY_MS);
      }
    };
  }

  function poll(url) {
    var elements = document.querySelectorAll("[data-live]");
    if (!elements.length) { return; }
    var views = {};
    elements.forEach(function (element) {
      var view = element.dataset.live;
      views[view] = views[view] || new URLSearchParams({ view: view });
      views[view].append("id", element.dataset.job);
    });
    var requests = Object.keys(views).map(function (view) {
      return fetch(url + "?" + views[view].toString(), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      }).then(function (response) {
        if (response.status === 401) { window.location.reload(); }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      }).then(function (data) {
        showBalance(data.balance);
        data.jobs.forEach(function (job) { update(view, job); });
      });
    });
    Promise.all(requests).then(
      function () { window.setTimeout(function () { poll(url); }, POLL_MS); },
      function () { window.setTimeout(function () { poll(url); }, RETRY_MS); }
    );
  }

  /* ---- vary region: paint the mask with a brush over the image (or choose a region with a button), post it as a
     PNG data URL ---- */
  function openMaskEditor(form, button) {
    var editor = form.querySelector("[data-mask-editor]");
    var panel = form.closest(".job-panel") || document;
    var image = panel.querySelector("[data-result-image]");
    if (!editor || !image) { return; }
    var canvas = editor.querySelector("[data-mask-canvas]");
    var width = image.naturalWidth, height = image.naturalHeight;
    var mask = document.createElement("canvas");  // the mask itself: black, white where painted
    mask.width = canvas.width = width;
    mask.height = canvas.height = height;
    var paint = mask.getContext("2d"), view = canvas.getContext("2d");
    paint.fillStyle = "#000";
    paint.fillRect(0, 0, width, height);
    var painted = false, last = null;
    var submit = editor.querySelector("[data-mask-submit]");
    function redraw() {
      view.clearRect(0, 0, width, height);
      view.drawImage(image, 0, 0, width, height);
      view.globalAlpha = 0.5;
      view.globalCompositeOperation = "screen";
      view.drawImage(mask, 0, 0);
      view.globalAlpha = 1;
      view.globalCompositeOperation = "source-over";
    }
    function at(event) {
      var box = canvas.getBoundingClientRect();
      return { x: (event.clientX - box.left) * width / box.width, y: (event.clientY - box.top) * height / box.height };
    }
    function stroke(point) {
      var brush = Number(editor.querySelector("[data-mask-brush]").value) * width / canvas.getBoundingClientRect().width;
      paint.strokeStyle = paint.fillStyle = "#fff";
      paint.lineWidth = brush;
      paint.lineCap = paint.lineJoin = "round";
      paint.beginPath();
      paint.moveTo((last || point).x, (last || point).y);
      paint.lineTo(point.x + 0.01, point.y);
      paint.stroke();
      last = point;
      painted = true;
      submit.disabled = false;
      redraw();
    }
    editor.querySelectorAll("[data-mask-region]").forEach(function (preset) {
      preset.onclick = function () {  // this region in place of what was marked (two halves would be all)
        var box = preset.getAttribute("data-mask-region").split(" ").map(Number);
        paint.fillStyle = "#000";
        paint.fillRect(0, 0, width, height);
        paint.fillStyle = "#fff";
        paint.fillRect(box[0] * width, box[1] * height, box[2] * width, box[3] * height);
        painted = true;
        submit.disabled = false;
        redraw();
      };
    });
    canvas.onpointerdown = function (event) { canvas.setPointerCapture(event.pointerId); last = null; stroke(at(event)); };
    canvas.onpointermove = function (event) { if (event.buttons & 1) { stroke(at(event)); } };
    canvas.onpointerup = function () { last = null; };
    editor.querySelector("[data-mask-clear]").onclick = function () {
      paint.fillStyle = "#000";
      paint.fillRect(0, 0, width, height);
      painted = false;
      submit.disabled = true;
      redraw();
    };
    editor.querySelector("[data-mask-cancel]").onclick = function () { editor.hidden = true; button.focus(); };
    submit.onclick = function () {
      if (!painted) { return; }
      form.querySelector("input[name=mask]").value = mask.toDataURL("image/png");
      var action = document.createElement("input");
      action.type = "hidden";
      action.name = "action";
      action.value = button.value;
      form.appendChild(action);
      form.submit();
    };
    editor.hidden = false;
    redraw();
    canvas.scrollIntoView({ block: "nearest" });
    editor.querySelector("[data-mask-region]").focus({ preventScroll: true });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-paint-mask]");
    if (!button) { return; }
    event.preventDefault();
    openMaskEditor(button.form, button);
  });

  document.addEventListener("DOMContentLoaded", function () {
    var shell = document.querySelector("[data-live-url]");
    if (!shell) { return; }
    if (window.EventSource && shell.dataset.eventsUrl) {
      follow(shell.dataset.eventsUrl, shell.dataset.liveUrl);
    } else {
      window.setTimeout(function () { poll(shell.dataset.liveUrl); }, POLL_MS);
    }
  });
})();
