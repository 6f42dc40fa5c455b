"""The statistical classifier: tokens of a message, counts learned from the
site's own ham and spam, and Robinson's chi-square combining of the token
probabilities into one spam probability the policy weighs like a rule."""
