"""The report: its sections (text and tables), figures, the five-line summary, rendering to HTML,
Markdown and fits.json, and reusing a report made from the same inputs. Imports the layers below."""
