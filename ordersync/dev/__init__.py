"""Development only, never in production: the embedded broker and Redis, the demo, a back-office stand-in."""
