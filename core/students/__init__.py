"""Students and the register: the register CSV and its import and sync, PESEL checks and moves,
eligibility, semesters, and changes of a student's university address."""
