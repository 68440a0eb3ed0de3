// soko registry UI: search as you type and copy buttons. Plain JavaScript, no build step,
// loaded as a file (the Content-Security-Policy forbids inline script).
"use strict";

(function () {
  function liveSearch(input) {
    var target = document.getElementById(input.dataset.live);
    var form = input.form;
    if (!target || !form || !window.fetch) return;
    var timer = null;
    var pending = null;
    var last = input.value;
    function run() {
      if (input.value === last) return;
      last = input.value;
      var params = new URLSearchParams(new FormData(form));
      params.delete("page");
      var shown = input.dataset.liveUrl + "?" + params.toString();
      params.set("partial", "1");
      if (pending) pending.abort();
      pending = new AbortController();
      target.setAttribute("aria-busy", "true");
      fetch(input.dataset.liveUrl + "?" + params.toString(),
            {credentials: "same-origin", signal: pending.signal, headers: {"Accept": "text/html"}})
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          target.innerHTML = html;  // the server's own escaped markup
          target.removeAttribute("aria-busy");
          history.replaceState(null, "", shown);
        })
        .catch(function (e) {
          if (e && e.name === "AbortError") return;
          target.removeAttribute("aria-busy");
          form.submit();  // fall back to a plain page load
        });
    }
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(run, 150);
    });
  }

  function copyText(text, done) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text, done); });
    } else {
      fallbackCopy(text, done);
    }
  }

  function fallbackCopy(text, done) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
    document.body.removeChild(area);
    done();
  }

  function copyButton(button) {
    var source = document.getElementById(button.dataset.copy);
    if (!source) return;
    button.hidden = false;
    button.setAttribute("aria-label", "Copy: " + source.textContent);
    button.addEventListener("click", function () {
      copyText(source.textContent, function () {
        button.textContent = "Copied";
        button.classList.add("copied");
        setTimeout(function () { button.textContent = "Copy"; button.classList.remove("copied"); }, 1500);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input[data-live]").forEach(liveSearch);
    document.querySelectorAll("button[data-copy]").forEach(copyButton);
  });
})();
