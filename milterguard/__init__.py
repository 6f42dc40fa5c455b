"""milterguard: a layered spam and attack defence for Postfix, as one milter."""

__version__ = "0.1.0"
