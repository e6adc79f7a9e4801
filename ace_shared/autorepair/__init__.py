"""Auto-repair (beta) and Spock exception status: insert-insert conflicts settled by last commit."""
