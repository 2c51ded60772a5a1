"""Domains: TLDs sold through plans, domains registered through registrar plugins."""
