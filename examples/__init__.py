"""Example data products and demo traffic: product-specific code kept out of the engine.

- demo_data: realistic click events (some invalid) for `flowsuite produce-demo` and the demo.
- engagement: the `partner_engagement` product (clicks per partner and hour, in lake and warehouse).
"""
