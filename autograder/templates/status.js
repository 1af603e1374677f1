// Reload the attempt page once the grader has finished with it.
(function () {
  var el = document.getElementById("attempt");
  if (!el) return;
  var id = el.dataset.id, status = el.dataset.status;
  function poll() {
    fetch("/api/attempts/" + id, {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (a) {
        if (a.status !== status) { window.location.reload(); return; }
        setTimeout(poll, 1000);
      })
      .catch(function () { setTimeout(poll, 3000); });
  }
  setTimeout(poll, 1000);
})();
