"""The task model and its scoring: the scene spec, states and transformations, TRANCE problems, the answer
grammar, TVR's metrics and STAR-R1's reward, and the text an agent reads (prompt, chat).

Nothing here renders or builds an environment: every other part of tvr-gym stands on these modules.
"""
