"""Accounts: the account tree (provider, resellers, customers), contacts,
users, roles and the first-start set-up."""
