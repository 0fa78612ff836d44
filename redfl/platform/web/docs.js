// Starts Swagger UI on /api/docs over the platform's OpenAPI schema (served only with
// `redfl serve --docs`). "Authorize" takes an access token from POST /api/auth/login.
window.ui = window.SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
});
