// The rider page: zones by name, a ride requested over POST /v1/rides (the estimate comes back at
// once), then every prediction live over Server-Sent Events. No build step, nothing from a CDN.
"use strict";

const $ = (id) => document.getElementById(id);
let updates = 0;

async function loadZones() {
  const zones = await (await fetch("/v1/zones")).json();
  for (const select of [$("pickup"), $("dropoff")]) {
    let group = null;
    for (const z of zones) {
      if (!group || group.label !== z.borough) {
        group = document.createElement("optgroup");
        group.label = z.borough;
        select.appendChild(group);
      }
      const option = new Option(z.zone, z.id);
      group.appendChild(option);
    }
  }
  $("pickup").value = "161";   // Midtown Center
  $("dropoff").value = "236";  // Upper East Side North
}

function show(id, value, digits = 1) {
  const el = $(id);
  const text = typeof value === "number" ? value.toFixed(digits) : String(value);
  if (el.textContent !== text) {
    el.textContent = text;
    el.classList.remove("flash");
    void el.offsetWidth;
    el.classList.add("flash");
  }
}

function onPrediction(p) {
  updates += 1;
  $("updates").textContent = String(updates);
  const version = `model ${p.model_version}`;
  if (p.service === "duration" && p.initial) {
    show("initial", p.value); $("initial-version").textContent = version;
  } else if (p.service === "duration") {
    show("duration", p.value); $("duration-version").textContent = version;
    if (p.remaining_min !== undefined) show("remaining", p.remaining_min);
  } else if (p.service === "tip") {
    show("tip", p.value, 2); $("tip-version").textContent = version;
  } else if (p.service === "cost") {
    show("cost", p.value, 2); $("cost-version").textContent = version;
  }
  const item = document.createElement("li");
  const extra = p.remaining_min !== undefined ? `, ${p.remaining_min.toFixed(1)} min left` : "";
  item.textContent = `${p.service}${p.initial ? " (first estimate)" : ""}: ${p.value}${p.unit === "usd" ? " USD" : " min"}${extra}`;
  $("log").prepend(item);
}

function follow(rideId) {
  const source = new EventSource(`/v1/rides/${encodeURIComponent(rideId)}/events`);
  source.addEventListener("open", () => { $("conn").textContent = "live"; });
  source.addEventListener("error", () => { $("conn").textContent = "reconnecting…"; });
  source.addEventListener("prediction", (e) => onPrediction(JSON.parse(e.data)));
  source.addEventListener("ride", (e) => {
    const r = JSON.parse(e.data);
    show("stage", r.stage.replace("_", " "));
    if (r.stage === "completed") show("remaining", 0);
  });
}

async function requestRide(event) {
  event.preventDefault();
  $("form-error").textContent = "";
  const body = {
    pickup_zone: Number($("pickup").value), dropoff_zone: Number($("dropoff").value),
    trip_distance_mi: Number($("distance").value), passenger_count: Number($("passengers").value),
    payment_type: Number($("payment").value), service: $("service").value, simulate: true,
  };
  $("request").disabled = true;
  try {
    const r = await fetch("/v1/rides", {
      method: "POST",
      headers: { "content-type": "application/json", "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Math.random()) },
      body: JSON.stringify(body),
    });
    const answer = await r.json();
    if (!r.ok) { $("form-error").textContent = answer.error || `error ${r.status}`; return; }
    $("ride").hidden = false;
    $("ride-id").textContent = answer.ride_id;
    show("initial", answer.initial_duration_min);
    $("initial-version").textContent = `model ${answer.model_version}`;
    follow(answer.ride_id);
  } catch (e) {
    $("form-error").textContent = `the backend did not answer: ${e}`;
  } finally {
    $("request").disabled = false;
  }
}

$("ride-form").addEventListener("submit", requestRide);
loadZones();
