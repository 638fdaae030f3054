"""The conversation use case: people talking to Arbiter on a pull request.

A comment that mentions the bot (mentions.py), or replies in a thread one of its findings
started, is classified by the rules (rules.py): a command from the one table (commands.py) or
a question (answer.py). Each is one exchange, recorded from start to end (exchange.py).
"""
