"""Webhooks: endpoints users register, and the signed deliveries of events to them (README, Webhooks).

- endpoints.py: registering, changing and deleting an endpoint (its URL checked by targets.py).
- dispatch.py: a published post becomes one delivery row per subscribed endpoint (unique per endpoint and event
  id, so a redelivered task makes none twice) and one task per delivery; the operators' retry and the sweep.
- delivery.py: one attempt at a delivery: a POST of the event's JSON signed with the endpoint's secret
  (signing.py), retried with exponential backoff and jitter on network errors, 408, 429 and 5xx, up to
  WEBHOOK_MAX_ATTEMPTS requests. Other answers end it: 2xx succeeded, anything else failed. Redirects are not
  followed.
- breaker.py: each receiving host (name and port) has a circuit breaker: it opens after WEBHOOK_BREAKER_THRESHOLD
  failures in a row; while open, deliveries to the host are deferred until the cool-down ends, without a request
  and without counting an attempt; then one trial request goes through, and its outcome closes the breaker or opens
  it for another cool-down.
- targets.py, client.py: SSRF. A URL must be http(s) and every address its host resolves to must be public.
  Checked when the endpoint is registered or changed, and again right before each request, which then connects to
  the address just checked (a DNS answer that changed in between cannot redirect it to an internal one).
"""
