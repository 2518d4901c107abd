"""Notifications service: alert rules, alerts, webhook deliveries and the inbox."""
