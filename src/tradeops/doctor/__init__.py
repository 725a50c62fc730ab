"""`tradeops doctor`: one command that says what is wrong with the stack and what to do.

``checks/`` holds one module per check family; :mod:`.runner` runs them all at once with
their own timeouts; :mod:`.report` prints one line per result (or JSON) with Nagios exit
codes; :mod:`.tui` is the Textual app over the same checks. The operator's playbook for
every check is docs/operations.md (section Doctor).
"""
