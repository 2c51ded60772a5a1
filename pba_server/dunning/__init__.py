"""Dunning: reminders, suspension and termination for overdue invoices; credit hold."""
