"""Who may say what: keys and trust stores, the DSSE envelope and OMS v1.0
statement, X.509 certificates, freshness and rollback, the trust policy, and
verification of a bundle against them.
"""
