"""The notifier: playbooks turn tag changes into push, SMS and coupon follow-ups, safely."""
