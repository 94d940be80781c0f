// The loader snippet: paste it into a page (inside a <script> tag). It defines window.segments
// at once, queueing every call (each returns a Promise) until segments.js has loaded; the SDK
// then replays the queued calls in order and takes the stub's place.
(function (w, d, src) {
  var s = (w.segments = w.segments || []);
  if (!Array.isArray(s) || s.loading) return;
  s.loading = true;
  "init identify identifyAnonymous updateUser group track alias reset isInSegment segments flush"
    .split(" ")
    .forEach(function (m) {
      s[m] = function () {
        var args = [].slice.call(arguments);
        return new Promise(function (resolve, reject) {
          s.push([m, args, resolve, reject]);
        });
      };
    });
  var e = d.createElement("script");
  e.type = "module";
  e.async = true;
  e.src = src;
  d.head.appendChild(e);
})(window, document, "https://YOUR-CDN.example.com/segments.js");
