// The operator page: fleet figures from /v1/ops every two seconds, every prediction from /v1/stream.
"use strict";

const $ = (id) => document.getElementById(id);

async function refresh() {
  try {
    const f = await (await fetch("/v1/ops")).json();
    const body = $("fleet").querySelector("tbody");
    body.replaceChildren();
    for (const service of ["duration", "tip", "cost"]) {
      const s = (f.services || {})[service] || {};
      const row = body.insertRow();
      for (const value of [service, s.predictions_per_s ?? "–", s.predictions ?? "–", s.lag ?? "–",
                           ((f.versions || {})[service] || []).join(", ") || "–"]) {
        row.insertCell().textContent = String(value);
      }
    }
    $("events-rate").textContent = f.events_per_s ?? "–";
    $("dlq").textContent = f.dlq ?? "–";
    $("updated").textContent = f.at ? `updated ${new Date(f.at * 1000).toLocaleTimeString()}` : "waiting for the first figures…";
    const r = f.replica || {};
    $("replica").textContent = r.id ?? "–";
    $("clients").textContent = r.sse_clients ?? "–";
    $("rides").textContent = r.rides_held ?? "–";
    $("overflows").textContent = r.sse_overflows ?? "–";
    $("rss").textContent = r.rss_mb ?? "–";
    $("driving").textContent = r.driving ?? "–";
  } catch (e) {
    $("updated").textContent = `the backend did not answer: ${e}`;
  }
}

let count = 0;
const live = new EventSource("/v1/stream");
live.addEventListener("open", () => { $("live-conn").textContent = "live"; });
live.addEventListener("error", () => { $("live-conn").textContent = "reconnecting…"; });
live.addEventListener("prediction", (e) => {
  const p = JSON.parse(e.data);
  count += 1;
  $("live-count").textContent = String(count);
  const item = document.createElement("li");
  item.textContent = `${p.ride_id} ${p.service}${p.initial ? " (estimate)" : ""} ${p.value} ${p.unit} · ${p.model_version}`;
  $("live").prepend(item);
  while ($("live").children.length > 50) $("live").lastChild.remove();
});

refresh();
setInterval(refresh, 2000);
