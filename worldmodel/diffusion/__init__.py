"""Flow matching: noise schedule, conversions, and few-step sampling."""
