// Starts Swagger UI on /api/docs (a file, not an inline script: the CSP allows scripts from 'self' only).
window.ui = SwaggerUIBundle({ url: "/api/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
