"""Identity and access: users and their profiles, care teams, EHR clients; who may see what
(`access`); sign-in, logins, passwords, the second factor, enrolment and administration.
"""
